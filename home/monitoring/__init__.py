"""Monitoring at home: bundle manifests (baselines), drift, guardrail rates and live metrics.

Reads the collector's SQLite file on connections of its own; the ingest path is untouched.
"""

from __future__ import annotations

from .bundles import StoredManifest, parse_upload, register_manifest
from .errors import ManifestConflict, ManifestError, MonitoringError, UnknownModel
from .report import build_report

__all__ = [
    "ManifestConflict",
    "ManifestError",
    "MonitoringError",
    "StoredManifest",
    "UnknownModel",
    "build_report",
    "parse_upload",
    "register_manifest",
]
