"""The feature store: features defined once, read point-in-time correct for training and by key
for serving. Write definitions with :class:`Entity`, :class:`FeatureView` and :class:`FeatureService`;
use them through ``workspace.features`` (:class:`~mloop.features.store.FeatureStore`)."""

from mloop.features.definitions import Entity, FeatureService, FeatureView

__all__ = ["Entity", "FeatureService", "FeatureView"]
