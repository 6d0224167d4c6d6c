"""Passive retraining's last step: promote a challenger only if it measures better.

``promote`` scores a challenger and the champion (the version an alias points at) on
the same labeled rows and moves the alias only if the challenger wins by the margin and
passes the guards; ``rollback`` moves it back; ``decisions`` lists what was decided.
"""

from .data import Rows, fetch_labeled, prepare, read_table
from .decision import Decision, PromoteOptions, judge, move_alias, promote, record_decision, rollback
from .errors import DataError, GuardError, MetricError, PromotionError
from .guards import Guard, parse_guard
from .history import decisions
from .scoring import METRICS, score

__all__ = [
    "Decision",
    "PromoteOptions",
    "Rows",
    "Guard",
    "METRICS",
    "promote",
    "rollback",
    "judge",
    "move_alias",
    "record_decision",
    "decisions",
    "score",
    "parse_guard",
    "read_table",
    "fetch_labeled",
    "prepare",
    "PromotionError",
    "DataError",
    "GuardError",
    "MetricError",
]
