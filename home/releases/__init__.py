"""Model releases at home: a TUF repository of signed releases, served by the collector.

``ReleaseRepository`` writes it (``edgepack release ...``); ``release_routes`` serves it
(TUF metadata and targets, device reports, the fleet); ``fleet_status`` reads the reports.
"""

from __future__ import annotations

from .errors import KeyFileError, PublishError, ReleaseError
from .release import ExpiryPolicy, Release, parse_rollout
from .repository import ReleaseRepository
from .status import fleet_status

__all__ = [
    "ExpiryPolicy",
    "KeyFileError",
    "PublishError",
    "Release",
    "ReleaseError",
    "ReleaseRepository",
    "fleet_status",
    "parse_rollout",
]
