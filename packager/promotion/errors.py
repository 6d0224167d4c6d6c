"""The exception tree of promotion (a branch of the build side's ``PackagerError``)."""

from __future__ import annotations

from ..errors import PackagerError


class PromotionError(PackagerError):
    """Root of every error ``edgepack promote`` / ``history`` raise on purpose."""


class DataError(PromotionError):
    """The scoring data cannot be read, lacks columns the models need, or has no labels."""


class GuardError(PromotionError, ValueError):
    """A ``--guard`` is not one edgepack knows, or its value is out of range."""


class MetricError(PromotionError, ValueError):
    """The metric does not fit the models (e.g. ``roc_auc`` for a regressor)."""
