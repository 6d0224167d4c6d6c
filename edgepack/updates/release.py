"""The release a signed TUF target describes, read on the device (which never imports ``home``).

``runtime.release.Release`` is the one definition of ``custom.edgepack`` for home and
device; here it is also checked against the target itself: the bundle's sha256 and length
must be the target's, so a release cannot announce one bundle and sign another.
"""

from __future__ import annotations

from typing import Any

from runtime.release import Release

from .errors import UpdateRefused


def parse_release(info: Any, channel: str) -> Release:
    try:
        release = Release.from_custom(info.custom)
    except ValueError as exc:
        raise UpdateRefused(f"target {info.path}: {exc}", channel=channel) from None
    sha = info.hashes.get("sha256")
    if sha != release.bundle_sha256 or info.length != release.length:
        raise UpdateRefused(
            f"release {release.release} announces bundle {release.bundle_sha256[:12]} ({release.length} bytes) but its signed "
            f"target is {str(sha)[:12]} ({info.length} bytes)", release=release.release, channel=channel,
        )
    if release.channel != channel:
        raise UpdateRefused(
            f"target {info.path}: release {release.release} is for channel {release.channel!r}, not {channel!r}",
            release=release.release, channel=channel,
        )
    return release
