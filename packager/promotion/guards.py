"""Guards: conditions a challenger must meet besides winning on the metric.

``--guard NAME=VALUE`` (repeatable):

- ``recall_drop=X``: no class's recall may drop by more than X (a fraction, 0 to 1)
  against the champion's on the same rows (classifiers only);
- ``min_rows=N``: at least N labeled rows to decide on at all;
- ``max_drop.<metric>=X``: another metric may not get worse by more than X (e.g.
  ``max_drop.accuracy=0.01`` while deciding on ``roc_auc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import GuardError
from .scoring import LOWER_IS_BETTER, METRICS


@dataclass(frozen=True, kw_only=True)
class Guard:
    """One guard, parsed."""

    name: str
    """``recall_drop``, ``min_rows`` or ``max_drop.<metric>``."""
    value: float
    """Its limit."""

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}"


def parse_guard(text: str) -> Guard:
    name, sep, raw = text.partition("=")
    name = name.strip()
    known = name in ("recall_drop", "min_rows") or (name.startswith("max_drop.") and name[9:] in METRICS)
    if not sep or not known:
        raise GuardError(
            f"guard {text!r} is not known; expected recall_drop=X, min_rows=N or max_drop.METRIC=X "
            f"(METRIC one of {', '.join(METRICS)})"
        )
    try:
        value = float(raw)
    except ValueError:
        raise GuardError(f"guard {text!r}: {raw!r} is not a number") from None
    if value < 0 or (name == "recall_drop" and value > 1):
        raise GuardError(f"guard {text!r}: expected a value >= 0" + (" and <= 1" if name == "recall_drop" else ""))
    return Guard(name=name, value=value)


def check(guards: tuple[Guard, ...], challenger: dict[str, Any], champion: dict[str, Any] | None) -> list[str]:
    """The reasons the challenger fails the guards (empty: it passes)."""
    failed = []
    for guard in guards:
        if guard.name == "min_rows":
            if challenger["rows"] < guard.value:
                failed.append(f"only {challenger['rows']} labeled rows, fewer than min_rows={guard.value:g}")
            continue
        if champion is None:
            continue
        if guard.name == "recall_drop":
            if "recall" not in challenger:
                raise GuardError("guard recall_drop applies to classifiers only")
            for label, before in champion.get("recall", {}).items():
                after = challenger["recall"].get(label, 0.0)
                if before - after > guard.value + 1e-12:
                    failed.append(f"recall of class {label} drops from {before:.4f} to {after:.4f}, more than {guard.value:g}")
        else:
            metric = guard.name[9:]
            if metric not in challenger or metric not in champion:
                raise GuardError(f"guard {guard}: {metric} cannot be computed for these models")
            drop = challenger[metric] - champion[metric] if metric in LOWER_IS_BETTER else champion[metric] - challenger[metric]
            if drop > guard.value + 1e-12:
                failed.append(f"{metric} gets worse by {drop:.4f} ({champion[metric]:.4f} -> {challenger[metric]:.4f}), more than {guard.value:g}")
    return failed
