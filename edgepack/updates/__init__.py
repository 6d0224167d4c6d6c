"""The device's update loop: TUF-verified releases from home into the model store, staged
rollout, health gate and automatic rollback. Needs the ``tuf`` package (a device dependency)."""

from __future__ import annotations

from .errors import ConfigError, DownloadInterrupted, UpdateError, UpdateRefused
from .loop import UpdateLoop
from .result import PollResult
from .options import GateOptions, UpdateOptions
from .rollout import bucket, takes

__all__ = [
    "ConfigError",
    "DownloadInterrupted",
    "GateOptions",
    "PollResult",
    "UpdateError",
    "UpdateLoop",
    "UpdateOptions",
    "UpdateRefused",
    "bucket",
    "takes",
]
