"""Errors of the monitoring side of home: manifests, drift, live metrics."""

from __future__ import annotations

from ..errors import HomeError


class MonitoringError(HomeError):
    """Root of every error home's monitoring raises on purpose."""


class ManifestError(MonitoringError):
    """An uploaded bundle or manifest cannot be used as a baseline (says what was expected)."""


class ManifestConflict(MonitoringError):
    """A different manifest is already stored under the same bundle sha256."""


class UnknownModel(MonitoringError):
    """No stored manifest (or record) matches the model or version asked for."""
