"""One module per protocol the service speaks: body decoding, response shapes, error mapping.

Each is a thin layer over the one :class:`~mloop.serving.service.ModelService`; a new front end
is a new module here, not an edit of the others.
"""
