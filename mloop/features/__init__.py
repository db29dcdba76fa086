"""The feature store: features defined once, read point-in-time correct for training and by key
for serving. Write definitions with :class:`Entity`, :class:`FeatureView` and :class:`FeatureService`
(a view's rows come from files, local or any fsspec URL, or a :class:`SqlSource`); use them through
``workspace.features`` (:class:`~mloop.features.store.FeatureStore`)."""

from mloop.features.definitions import Entity, FeatureService, FeatureView
from mloop.features.sources import SqlSource

__all__ = ["Entity", "FeatureService", "FeatureView", "SqlSource"]
