"""A release: one channel's signed offer of a bundle, as home writes it and a device reads it.

It travels as ``custom.edgepack`` of a TUF target (``channels/<channel>.edgepkg``). Home
(``home.releases``) writes it with ``custom()``; the device's update loop
(``edgepack.updates``) reads it with ``from_custom()``, which checks every field, and then
checks it against the signed target itself. One definition for both sides, so the two can
never disagree on what a field means.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

CUSTOM_KEY = "edgepack"
RELEASE_FORMAT = 1
KINDS = ("publish", "rollback")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        """The ``custom`` of the TUF target that offers it."""
        body = asdict(self)
        body["devices"] = list(self.devices)
        body["format"] = RELEASE_FORMAT
        # Canonical JSON (what TUF signs) has no floats: the percentage travels in basis points.
        body["rollout_bp"] = round(body.pop("rollout") * 100)
        return {CUSTOM_KEY: body}

    @classmethod
    def from_custom(cls, custom: Any) -> Release:
        """The release in a target's ``custom``; ``ValueError`` naming the field that is missing or wrong.

        ``rollout`` (a percentage) is read where ``rollout_bp`` is absent: home's
        ``releases.json`` history kept it so before the two sides shared this class.
        """
        body = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
        if not isinstance(body, dict):
            raise ValueError(f"no edgepack release (custom.{CUSTOM_KEY})")
        try:
            release = cls(
                release=int(body["release"]), channel=str(body["channel"]), model=str(body["model"]),
                version=str(body["version"]), bundle_sha256=str(body["bundle_sha256"]), length=int(body["length"]),
                rollout=int(body["rollout_bp"]) / 100 if "rollout_bp" in body else float(body["rollout"]), devices=tuple(str(d) for d in body.get("devices") or ()),
                halted=bool(body.get("halted", False)), kind=str(body.get("kind", "publish")),
                published_at=str(body.get("published_at", "")),
            )
        except KeyError as exc:
            raise ValueError(f"malformed release: field {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed release ({exc})") from None
        if release.release < 1:
            raise ValueError(f"malformed release: release number {release.release}, expected 1 or more")
        if release.kind not in KINDS:
            raise ValueError(f"malformed release: kind {release.kind!r}, expected one of {', '.join(KINDS)}")
        if not _SHA256.fullmatch(release.bundle_sha256):
            raise ValueError(f"malformed release: bundle_sha256 {release.bundle_sha256[:70]!r} is not 64 lowercase hex digits")
        if not 0 <= release.rollout <= 100:
            raise ValueError(f"malformed release: rollout {release.rollout}%, expected 0-100%")
        return release
