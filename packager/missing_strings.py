"""Imputed string columns: a missing string crosses the ONNX boundary as a sentinel string.

pandas holds a missing string as NaN (or None), and ``SimpleImputer`` on a string column looks
for that NaN; skl2onnx's imputer converter takes only a *string* ``missing_values``, so such a
pipeline does not convert. edgepack converts a copy whose string imputers look for a sentinel
string instead, feeds the sentinel for a missing value (the parity gate here, the runtime on the
device: the manifest's ``missing_string`` for that feature), and the parity gate proves that the
copy, fed the sentinel, answers what the original answers for NaN. The original model is never
changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .convert import Column
from .errors import UnsupportedModelError
from .routing import routed_columns

SENTINEL = "\x00edgepack:missing"
"""What a missing string goes in as. Never ``""``: an application may send ``""`` as a real
value, which the original model treats as a category of its own (or an unknown one), and a
graph that took ``""`` for missing would impute it instead. The runtime refuses this exact
string as an input value (a NUL byte is in no real category), so it stands for missing only."""


@dataclass(frozen=True)
class Bridged:
    """The model to convert, and what a missing string goes in as for each bridged column."""

    model: Any
    """A copy of the original whose string imputers look for the sentinel (or the original itself)."""
    missing: dict[str, str]
    """Raw column -> the string that stands for a missing value in the ONNX graph."""


def _string_imputer(step: Any) -> bool:
    from sklearn.impute import SimpleImputer

    if not isinstance(step, SimpleImputer) or isinstance(step.missing_values, str):
        return False
    stats = getattr(step, "statistics_", None)
    return stats is not None and stats.dtype == object and all(isinstance(v, str) for v in stats.tolist())


def _imputers(model: Any, columns: Sequence[str] | None) -> Iterator[tuple[Any, Sequence[str] | None]]:
    """Every SimpleImputer with the raw columns it sees (None when a step before it mixes them)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        for _, step in model.steps:
            if step is None or (isinstance(step, str) and step == "passthrough"):
                continue
            yield from _imputers(step, columns)
            if not (isinstance(step, SimpleImputer) and not step.add_indicator):
                columns = None
    elif isinstance(model, ColumnTransformer):
        for _, trans, cols in model.transformers_:
            if isinstance(trans, str):
                continue
            yield from _imputers(trans, routed_columns(cols, model))
    elif isinstance(model, SimpleImputer):
        yield model, columns


def bridge(model: Any, columns: Sequence[Column], reference: Any = None) -> Bridged:
    """Rewire the string imputers of a copy of ``model`` to a sentinel; the original when there are none.

    Only imputers that see raw string columns are rewired (those are what the device's missing
    value reaches), all to ``SENTINEL``; a column that really holds it (in ``reference``), or
    an imputer that fills it in, is refused: its missing values could not be told apart.
    """
    strings = [c.name for c in columns if c.kind == "categorical"]
    found = [(imp, cols) for imp, cols in _imputers(model, strings) if _string_imputer(imp) and cols]
    if not found:
        return Bridged(model=model, missing={})
    taken: set[str] = set()
    for imp, cols in found:
        taken.update(str(v) for v in imp.statistics_.tolist())
        if reference is not None:
            for col in cols:
                if col in reference.columns:
                    taken.update(str(v) for v in reference[col].dropna().tolist())
    if SENTINEL in taken:
        raise UnsupportedModelError(
            f"a string column of the model holds {SENTINEL!r}, the string edgepack feeds the converted graph for a "
            "missing value, so a missing value and that string could not be told apart; remove the NUL byte from "
            "that value in the training data"
        )
    sentinel = SENTINEL
    twin = copy.deepcopy(model)
    missing: dict[str, str] = {}
    for imp, cols in _imputers(twin, strings):
        if _string_imputer(imp) and cols:
            imp.missing_values = sentinel
            missing.update({str(c): sentinel for c in cols})
    return Bridged(model=twin, missing=missing)
