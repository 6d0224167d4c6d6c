"""The staged-rollout rule: deterministic, computed on the device from signed data only.

A device takes a release at ``rollout`` percent if and only if its bucket, the first 8
bytes of sha256("<device id>\\n<release number>") read as an integer and scaled to
[0, 100), is below ``rollout`` (or the release names the device). The release number is
in the hash, so each release picks an independent sample of the fleet; ``promote`` keeps
the number, so widening 10% -> 50% keeps every device of the first 10%.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def bucket(device_id: str, release: int) -> float:
    """Where ``device_id`` falls for ``release``, in [0, 100)."""
    digest = hashlib.sha256(f"{device_id}\n{release}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def takes(device_id: str, release: int, rollout: float, devices: Sequence[str] = ()) -> bool:
    """Whether ``device_id`` is in a release at ``rollout`` percent naming ``devices``."""
    return device_id in devices or bucket(device_id, release) < rollout
