"""Time windows as people write them: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``, or ``all``."""

from __future__ import annotations

import re

from .errors import MonitoringError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_window(text: str) -> float | None:
    """Seconds in ``text`` (None for ``all``); ``MonitoringError`` naming the expected form."""
    if text.strip().lower() == "all":
        return None
    match = _PATTERN.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise MonitoringError(
            f"window {text!r} is not understood; expected a positive number and a unit (s, m, h, d, w), e.g. 24h or 7d, or 'all'"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]
