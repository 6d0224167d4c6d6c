"""What one poll of the update loop did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class PollResult:
    """What one poll did."""

    outcome: str
    """unchanged | offline | refused | no_release | not_selected | halted | rejected | current | installed | gate_open |
    gate_passed | rolled_back"""
    detail: str = ""
    """A sentence for the log."""
    release: int | None = None
    """The release concerned, if any."""
