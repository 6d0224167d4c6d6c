"""What a release is: one channel's signed offer (``Release``), and the rules for its fields."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runtime.store import fsync_dir

from .errors import PublishError

CHANNEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
CUSTOM_KEY = "edgepack"
RELEASE_FORMAT = 1


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


@dataclass(frozen=True, kw_only=True)
class Release:
    """What a channel offers: one signed target's ``custom.edgepack``."""

    release: int
    """Release number, unique and growing across the repository (a rollback gets a new one)."""
    channel: str
    """The channel, e.g. ``stable`` or ``canary``."""
    model: str
    """The bundle's registry model name."""
    version: str
    """The bundle's registry version."""
    bundle_sha256: str
    """sha256 of the ``.edgepkg`` file (also the TUF target's hash)."""
    length: int
    """Size of the bundle in bytes (also the TUF target's length)."""
    rollout: float
    """Percent of devices (0-100) that take it: those whose bucket (hash of device id and
    release number) falls under it."""
    devices: tuple[str, ...] = ()
    """Devices that take it whatever their bucket (canaries)."""
    halted: bool = False
    """Devices not yet on it stop taking it; devices on it stay."""
    kind: str = "publish"
    """``publish`` or ``rollback`` (a deliberate step back to an older bundle)."""
    published_at: str = ""
    """UTC time of the first publish of this release number (informational)."""

    def custom(self) -> dict[str, Any]:
        body = asdict(self)
        body["devices"] = list(self.devices)
        body["format"] = RELEASE_FORMAT
        # Canonical JSON (what TUF signs) has no floats: the percentage travels in basis points.
        body["rollout_bp"] = round(body.pop("rollout") * 100)
        return {CUSTOM_KEY: body}

    @classmethod
    def from_custom(cls, custom: Any) -> Release:
        body = dict(custom[CUSTOM_KEY])
        body.pop("format", None)
        if "rollout_bp" in body:
            body["rollout"] = body.pop("rollout_bp") / 100
        body["devices"] = tuple(body.get("devices") or ())
        return cls(**body)


def target_path(channel: str) -> str:
    return f"channels/{channel}.edgepkg"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def expiry_in(days: float) -> dt.datetime:
    return now_utc() + dt.timedelta(days=days)


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename into place, fsync the directory: readers see old or new bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
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


