"""The one exception tree of mloop.

Every error a user can cause or meet derives from :class:`MloopError`. Each class carries the HTTP
status and the CLI exit code it maps to, so the shells (CLI, HTTP) never need their own tables.
Messages name the field, the rule and the value given. Foreign errors (SQLAlchemy, fsspec, pandas…)
are translated at the boundary where they happen, never leaked.
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorruptedError",
    "ArtifactNotFoundError",
    "BodyTooLargeError",
    "BusyError",
    "ConfigurationError",
    "ConflictError",
    "DataError",
    "ForbiddenError",
    "InputError",
    "MetadataStoreError",
    "MloopError",
    "NotFiniteError",
    "NotFoundError",
    "ParameterError",
    "PipelineDefinitionError",
    "PipelineLoadError",
    "ReadTimeoutError",
    "SchemaSkewError",
    "SchemaVersionError",
    "SerializationError",
    "StepFailedError",
    "StoreUnavailableError",
    "StoreUnreachableError",
    "UnauthorizedError",
    "UnsupportedEncodingError",
    "UnsupportedMediaTypeError",
    "WorkspaceGoneError",
]

EXIT_USAGE = 2
EXIT_CHECK_FAILED = 1
TOKEN_MAX = 300  # longer runs without a space in a message are a value echoed back: shortened
MESSAGE_MAX = 10_000


def bounded(text: str, limit: int = MESSAGE_MAX) -> str:
    """``text`` with every run of more than :data:`TOKEN_MAX` non-space characters shortened to its
    start and end, and at most ``limit`` characters in all: an error that quotes the value it refuses
    (a megabyte cron expression, a request field) stays one readable line, not the value again."""
    import re

    def shorten(match: re.Match[str]) -> str:
        token = match.group()
        return f"{token[:120]}…[{len(token) - 160:,} characters]…{token[-40:]}"

    if len(text) > TOKEN_MAX:
        text = re.sub(rf"\S{{{TOKEN_MAX + 1},}}", shorten, text)
    if len(text) > limit:
        text = f"{text[: limit - 1000]}…[{len(text) - limit + 200:,} characters]…{text[-800:]}"
    return text


class MloopError(Exception):
    """Base of every mloop error.

    ``field`` names the input at fault when there is one (a parameter, a column, a file).
    ``stops_run``: raised inside a step, the run ends ``stopped`` (a gate held it) instead of ``failed``.
    """

    http_status: int = 400
    exit_code: int = EXIT_USAGE
    code: str = "mloop_error"
    stops_run: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message
        self.field = bounded(field, TOKEN_MAX) if field is not None else None

    def to_dict(self) -> dict[str, object]:
        """The JSON error body of the HTTP contract: ``{"error": {code, message, field}}``."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class ConfigurationError(MloopError):
    """Settings or a workspace location that cannot be used."""

    code = "configuration_error"


class PipelineDefinitionError(MloopError):
    """The pipeline graph is invalid: a cycle, an input nobody provides, a bad parameter default."""

    code = "pipeline_definition_error"


class PipelineLoadError(MloopError):
    """A ``file.py:name`` reference that cannot be loaded (missing file, missing name, import error)."""

    code = "pipeline_load_error"


class ParameterError(MloopError):
    """A run parameter that is unknown, of the wrong type, missing or not JSON-serialisable."""

    code = "parameter_error"
    http_status = 422


class SerializationError(MloopError):
    """A value no serializer handles, or bytes a serializer cannot read back."""

    code = "serialization_error"


class DataError(MloopError):
    """Input data that cannot be used: empty, unreadable, wrong encoding, zero rows where rows are needed."""

    code = "data_error"
    http_status = 422


class InputError(MloopError):
    """A prediction request whose rows do not match the model's signature (HTTP 422)."""

    code = "invalid_input"
    http_status = 422


class SchemaSkewError(MloopError):
    """Data does not match its schema. Raised in a step, it stops the run (status ``stopped``).

    ``artifacts`` are recorded as the stopping step's outputs, so the anomaly report stays attached to
    the run that was refused.
    """

    code = "schema_skew"
    http_status = 422
    exit_code = EXIT_CHECK_FAILED
    stops_run = True

    def __init__(self, message: str, *, artifacts: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.artifacts = artifacts or {}


class ConflictError(MloopError):
    """The request contradicts the current state (e.g. promoting a rejected model without --force)."""

    code = "conflict"
    http_status = 409


class NotFoundError(MloopError):
    """A run, step run, artifact or other entity that does not exist."""

    code = "not_found"
    http_status = 404


class ArtifactNotFoundError(NotFoundError):
    """The metadata knows an artifact but its bytes are gone from the artifact store."""

    code = "artifact_not_found"


class ArtifactCorruptedError(MloopError):
    """Bytes read back do not match the artifact's content digest (tampering or corruption)."""

    code = "artifact_corrupted"
    http_status = 409
    exit_code = EXIT_CHECK_FAILED


class StepFailedError(MloopError):
    """A step raised; the run is marked failed with the step, exception type and message."""

    code = "step_failed"
    http_status = 500
    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, run_id: str, step: str, error_type: str, error_message: str) -> None:
        super().__init__(message, field=step)
        self.run_id = run_id
        self.step = step
        self.error_type = error_type
        self.error_message = error_message


class MetadataStoreError(MloopError):
    """The metadata store refused an operation (constraint, bad query)."""

    code = "metadata_store_error"
    http_status = 500


class StoreUnavailableError(MloopError):
    """A store URL that cannot be connected to (server down, bad credentials, unreachable path)."""

    code = "store_unavailable"
    http_status = 503


class WorkspaceGoneError(MloopError):
    """The workspace's database file was deleted or replaced under a process that had it open: its
    writes since went to a file no other process sees. A daemon stops on it rather than go on."""

    code = "workspace_gone"
    http_status = 503
    exit_code = EXIT_CHECK_FAILED


class StoreUnreachableError(StoreUnavailableError):
    """The database server did not answer at all (down, restarting, not up yet): worth waiting for,
    unlike a store that answers with an error or a file that cannot be read."""


class SchemaVersionError(MloopError):
    """The database was created by a newer mloop whose schema this version does not know."""

    code = "schema_version_error"
    http_status = 500


class UnauthorizedError(MloopError):
    """No token, or a token that is unknown or revoked (HTTP 401)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(MloopError):
    """A valid token whose role may not do what was asked (HTTP 403)."""

    code = "forbidden"
    http_status = 403


class BodyTooLargeError(MloopError):
    """A request body larger than the prediction service accepts (HTTP 413)."""

    code = "body_too_large"
    http_status = 413


class UnsupportedEncodingError(MloopError):
    """A request body sent compressed (``Content-Encoding: gzip``, …): the service reads bodies as
    sent, so it answers 415 with ``Accept-Encoding: identity`` (RFC 7694) rather than parse
    compressed bytes as JSON or CSV."""

    code = "unsupported_encoding"
    http_status = 415


class UnsupportedMediaTypeError(InputError):
    """A body sent as a media type or charset the endpoint does not read (HTTP 415). mloop's own
    endpoints take JSON only: a browser sends ``text/plain`` or form bodies to any origin without a
    CORS preflight, so accepting them would let any web page post labels to a local server."""

    code = "unsupported_media_type"
    http_status = 415


class BusyError(MloopError):
    """The service cannot take this now, and says when to retry (HTTP 503 with ``Retry-After``):
    labels waiting to be written have filled their buffer, say. Nothing of the request was kept."""

    code = "busy"
    http_status = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class ReadTimeoutError(MloopError):
    """A client that did not send its request body in time (HTTP 408)."""

    code = "request_timeout"
    http_status = 408


class NotFiniteError(InputError):
    """A model answer that is not a finite number (e.g. NaN from ±1e308 inputs): an error, never served."""

    code = "prediction_not_finite"
