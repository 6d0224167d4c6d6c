"""Which features may be missing on the device: proven per converted model, never assumed.

A feature is nullable when the original model takes its missing value (scikit-learn does not
raise, and answers no NaN) and the ONNX model, fed the missing value the way the device feeds it
(NaN for numbers, the manifest's missing string for strings), answers the same: on reference
rows with that one feature set missing, and on every pattern of missing features that the real
reference rows hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .convert import Column, Converted


@dataclass
class MissingProof:
    """What the missing-value probes proved for one converted model."""

    nullable: set[str]
    """Features whose missing value both models take and answer the same for."""
    rows: Any
    """Complete rows, then every probe and real row with missing values that passed."""
    rows_with_missing: int
    """How many of ``rows`` have a missing value."""
    comparisons: list[Any] = field(default_factory=list)
    """The comparisons of the rows with missing values in ``rows``."""


def with_missing(frame: Any, column: Column, count: int) -> Any:
    """The first ``count`` rows of ``frame`` with ``column`` missing, as pandas holds it (NaN)."""
    import numpy as np

    probe = frame.head(count).copy()
    if column.kind == "numeric":
        probe[column.name] = probe[column.name].astype(float)
        probe[column.name] = np.nan
    else:
        probe[column.name] = np.full(len(probe), np.nan, dtype=object)
    return probe.reset_index(drop=True)


def _original(model: Any, frame: Any, classification: bool) -> Any:
    """The original's answers on ``frame``, None when it refuses missing values or answers NaN."""
    import numpy as np

    from .parity import original_answers

    try:
        answers = original_answers(model, frame, classification)
    except (ValueError, TypeError):  # sklearn refuses NaN (ValueError), or a string op meets a float
        return None
    if np.isnan(answers.values()).any():
        return None
    return answers


@dataclass
class MissingCase:
    """Rows with the same features missing, and what the original answers on them."""

    gaps: tuple[str, ...]
    """The missing features."""
    frame: Any
    """The rows."""
    expected: Any
    """The original's ``Answers``; None when it refuses them."""


def _answers_in_blocks(model: Any, frames: list[Any], classification: bool, numeric: Sequence[str]) -> list[Any]:
    """The original's answers per frame, in one call when it takes them all (a HistGradientBoosting
    predict costs about the same for 1 row as for 1000), else frame by frame."""
    import pandas as pd

    from .parity import Answers

    if not frames:
        return []
    joined = None
    if len(frames) > 1:
        rows = pd.concat([f.astype(object) for f in frames], ignore_index=True)
        for name in numeric:  # numbers as numbers (a bool column with NaN as 1.0/0.0/NaN, as with_missing makes it)
            rows[name] = pd.to_numeric(rows[name])
        joined = _original(model, rows, classification)
    if joined is None:
        return [_original(model, f, classification) for f in frames]
    out, start = [], 0
    for f in frames:
        stop = start + len(f)
        part = slice(start, stop)
        out.append(
            Answers(
                labels=None if joined.labels is None else joined.labels[part],
                probabilities=None if joined.probabilities is None else joined.probabilities[part],
                prediction=None if joined.prediction is None else joined.prediction[part],
            )
        )
        start = stop
    return out


def missing_cases(
    model: Any, complete: Any, incomplete: Any, columns: Sequence[Column], probe_columns: Sequence[Column], classification: bool, count: int
) -> tuple[list[MissingCase], list[MissingCase]]:
    """The probes (one feature missing in ``count`` complete rows, per feature) and the real rows
    with missing values (one case per pattern), with the original's answers: computed once, then
    compared with each converted model."""
    numeric = [c.name for c in columns if c.kind == "numeric"]
    singles = [with_missing(complete, c, count) for c in probe_columns]
    single_cases = [
        MissingCase((c.name,), f, a) for c, f, a in zip(probe_columns, singles, _answers_in_blocks(model, singles, classification, numeric))
    ]
    patterns = incomplete.isna().apply(lambda r: tuple(r.index[r.to_numpy()]), axis=1).tolist() if len(incomplete) else []
    # Fewest gaps first: a pattern that fails then takes out only the features it alone proves
    # unsafe, and a wider pattern holding one of those is skipped rather than blamed on the rest.
    groups = [
        (gaps, incomplete[[p == gaps for p in patterns]].reset_index(drop=True))
        for gaps in sorted(set(patterns), key=lambda g: (len(g), g))
    ]
    answers = _answers_in_blocks(model, [f for _, f in groups], classification, numeric)
    return single_cases, [MissingCase(tuple(g), f, a) for (g, f), a in zip(groups, answers)]


def prove_missing(
    sess: Any,
    conv: Converted,
    columns: list[Column],
    complete: Any,
    cases: tuple[list[MissingCase], list[MissingCase]],
    *,
    classes: list[Any] | None,
    label_values: list[Any] | None,
    tol: Any,
    missing: Mapping[str, str] | None,
) -> MissingProof:
    import pandas as pd

    from .parity import compare, onnx_answers

    def passes(case: MissingCase) -> Any:
        if case.expected is None:
            return None
        result = compare(case.expected, onnx_answers(sess, case.frame, columns, conv, classes, label_values, missing), tol)
        return result if bool(result.ok.all()) else None

    singles, patterns = cases
    nullable: set[str] = set()
    passed: list[tuple[MissingCase, Any]] = []
    for case in singles:
        if (result := passes(case)) is not None:
            nullable.update(case.gaps)
            passed.append((case, result))
    for case in patterns:
        if not set(case.gaps) <= nullable:
            continue
        if (result := passes(case)) is not None:
            passed.append((case, result))
        else:
            # Real rows with missing values disagree: refuse them on the device rather than
            # answer differently from the original.
            nullable -= set(case.gaps)
    passed = [(case, result) for case, result in passed if set(case.gaps) <= nullable]
    frames = [case.frame.astype(object) for case, _ in passed]
    missing_rows = pd.concat(frames, ignore_index=True) if frames else complete.iloc[0:0]
    rows = pd.concat([complete.astype(object), missing_rows.astype(object)], ignore_index=True)
    for col in columns:
        if col.kind == "numeric":
            rows[col.name] = pd.to_numeric(rows[col.name])
    return MissingProof(nullable=nullable, rows=rows, rows_with_missing=len(missing_rows), comparisons=[r for _, r in passed])
