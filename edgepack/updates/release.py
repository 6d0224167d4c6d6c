"""The release a signed TUF target describes, read on the device (which never imports ``home``).

The home side writes ``custom.edgepack`` (``home.releases.Release``); here it is checked
field by field, and against the target itself: the bundle's sha256 and length must be
the target's, so a release cannot announce one bundle and sign another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UpdateRefused

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class DeviceRelease:
    release: int
    """Release number (grows across the repository)."""
    channel: str
    """Its channel."""
    model: str
    """Registry model name."""
    version: str
    """Registry version."""
    bundle_sha256: str
    """sha256 of the bundle (the signed target's)."""
    length: int
    """Bytes of the bundle (the signed target's)."""
    rollout: float
    """Percent of the fleet (signed as ``rollout_bp``, basis points: canonical JSON has no floats)."""
    devices: tuple[str, ...]
    """Devices named explicitly."""
    halted: bool
    """No new device takes it."""
    kind: str
    """publish | rollback."""


def parse_release(info: Any, channel: str) -> DeviceRelease:
    custom = info.custom
    body = custom.get("edgepack") if isinstance(custom, dict) else None
    if not isinstance(body, dict):
        raise UpdateRefused(f"target {info.path} carries no edgepack release (custom.edgepack)", channel=channel)
    try:
        release = DeviceRelease(
            release=int(body["release"]), channel=str(body["channel"]), model=str(body["model"]), version=str(body["version"]),
            bundle_sha256=str(body["bundle_sha256"]), length=int(body["length"]), rollout=int(body["rollout_bp"]) / 100,
            devices=tuple(str(d) for d in body.get("devices") or ()), halted=bool(body.get("halted", False)),
            kind=str(body.get("kind", "publish")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UpdateRefused(f"target {info.path}: malformed release ({exc!r})", channel=channel) from None
    sha = info.hashes.get("sha256")
    if not _SHA256.fullmatch(release.bundle_sha256) or sha != release.bundle_sha256 or info.length != release.length:
        raise UpdateRefused(
            f"release {release.release} announces bundle {release.bundle_sha256[:12]} ({release.length} bytes) but its signed "
            f"target is {str(sha)[:12]} ({info.length} bytes)", release=release.release, channel=channel,
        )
    if release.channel != channel or release.kind not in ("publish", "rollback") or release.release < 1:
        raise UpdateRefused(f"target {info.path}: release fields do not fit channel {channel!r}", release=release.release, channel=channel)
    return release
