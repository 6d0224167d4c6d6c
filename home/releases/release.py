"""The rules for a release's fields at home (``Release`` itself is ``runtime.release``, shared with devices)."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.release import CUSTOM_KEY, RELEASE_FORMAT, Release
from runtime.store import fsync_dir, write_durably

from .errors import PublishError

CHANNEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
__all__ = ["CUSTOM_KEY", "RELEASE_FORMAT", "ExpiryPolicy", "Release", "check_channel", "expiry_in", "now_utc", "parse_rollout", "target_path", "write_atomically"]


@dataclass(frozen=True, kw_only=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid after it is signed."""

    root_days: float = 365.0
    """Root: re-signed only on a key rotation (or ``release refresh --root``)."""
    targets_days: float = 90.0
    """Targets: re-signed with every publish, promote, halt and rollback."""
    snapshot_days: float = 30.0
    """Snapshot: re-signed with every change, and by ``release refresh``."""
    timestamp_days: float = 7.0
    """Timestamp: the freshness guarantee. A device refuses an older timestamp than this
    allows, so a frozen repository (or an attacker replaying it) is noticed within it.
    Run ``edgepack release refresh`` more often than half of it (cron, a systemd timer)."""


def target_path(channel: str) -> str:
    return f"channels/{channel}.edgepkg"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def expiry_in(days: float) -> dt.datetime:
    return now_utc() + dt.timedelta(days=days)


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename into place, fsync the directory: readers see old or new bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a process killed mid-write that had this pid
    write_durably(tmp, data, mode=0o644)  # served to devices: readable by the collector's users
    os.replace(tmp, path)
    fsync_dir(path.parent)


def check_channel(channel: str) -> str:
    if not CHANNEL.fullmatch(channel):
        raise PublishError(f"channel {channel!r} is not allowed: expected 1-64 lowercase letters, digits, '-' or '_'")
    return channel


def parse_rollout(text: str | float | int) -> float:
    """``"10%"``, ``"10"`` or ``10`` -> 10.0; ``PublishError`` outside 0-100."""
    raw = str(text).strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise PublishError(f"rollout {text!r} is not a percentage; expected e.g. 10% or 100") from None
    if not 0.0 <= value <= 100.0:
        raise PublishError(f"rollout {text!r} is outside 0-100%")
    return value


