"""Reference rows for the parity gate: the user's data, or rows synthesised from the logged
input example (deterministically, with a fixed seed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .convert import Column
from .errors import ReferenceDataError
from .options import BuildOptions


def read_reference(source: Any, columns: Sequence[Column]) -> Any:
    """A DataFrame of the model's columns, in order, from a DataFrame or a CSV/Parquet path."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        path = Path(os.fspath(source))
        suffix = path.suffix.lower()
        try:
            if suffix == ".csv":
                frame = pd.read_csv(path)
            elif suffix in (".parquet", ".pq"):
                frame = pd.read_parquet(path)
            else:
                raise ReferenceDataError(f"reference data {str(path)!r} has suffix {suffix!r}; expected .csv or .parquet")
        except ReferenceDataError:
            raise
        except (OSError, ValueError, ImportError) as exc:
            raise ReferenceDataError(f"cannot read reference data {str(path)!r}: {exc}") from exc
    missing = [c.name for c in columns if c.name not in frame.columns]
    if missing:
        raise ReferenceDataError(
            f"reference data lacks the model's columns {missing}; expected columns {[c.name for c in columns]}"
        )
    if frame.empty:
        raise ReferenceDataError("reference data has no rows; expected at least one row of the model's columns")
    return frame


def select(frame: Any, columns: Sequence[Column]) -> Any:
    """Only the model's columns, in training order, with a fresh 0..N-1 index; numbers as
    numbers and strings as strings, whatever a CSV reader guessed."""
    import pandas as pd

    out = frame[[c.name for c in columns]].reset_index(drop=True).copy()
    for col in columns:
        series = out[col.name]
        if col.kind == "numeric":
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                continue
            try:
                out[col.name] = pd.to_numeric(series)
            except (ValueError, TypeError) as exc:
                raise ReferenceDataError(f"column {col.name!r} should hold numbers: {exc}") from exc
        elif not (pd.api.types.is_string_dtype(series) or series.dtype == object) or pd.api.types.is_numeric_dtype(series):
            out[col.name] = pd.Series([v if pd.isna(v) else str(v) for v in series.tolist()], dtype=object)
    return out


def synthesize(
    example: Any,
    columns: Sequence[Column],
    *,
    rows: int,
    seed: int,
    categories: Mapping[str, Sequence[Any]],
    ranges: Mapping[str, tuple[float, float]],
) -> Any:
    """``rows`` rows drawn around the input example: numbers uniform over the example's span
    (or the training range when known) widened by 10 %, categories from the fitted encoders."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for col in columns:
        seen = example[col.name] if example is not None and col.name in example.columns else None
        if col.kind == "numeric":
            if seen is not None and pd.api.types.is_bool_dtype(seen):
                data[col.name] = rng.integers(0, 2, rows).astype(bool)
                continue
            values = seen.dropna().to_numpy(dtype=float) if seen is not None else np.empty(0)
            if col.name in ranges:
                lo, hi = ranges[col.name]
            elif values.size:
                lo, hi = float(values.min()), float(values.max())
            else:
                lo, hi = 0.0, 1.0
            span = hi - lo
            pad = 0.1 * span if span > 0 else max(1.0, 0.1 * abs(lo))
            drawn = rng.uniform(lo - pad, hi + pad, rows)
            if seen is not None and pd.api.types.is_integer_dtype(seen):
                data[col.name] = np.rint(drawn).astype(seen.dtype)
            else:
                data[col.name] = drawn
        else:
            pool = list(categories.get(col.name, []))
            if seen is not None:
                pool += [v for v in seen.dropna().tolist() if v not in pool]
            if not pool:
                raise ReferenceDataError(
                    f"cannot synthesise values for string column {col.name!r}: no categories are known; "
                    "pass --reference-data"
                )
            pool = sorted({str(v) for v in pool})
            data[col.name] = np.asarray(pool, dtype=object)[rng.integers(0, len(pool), rows)]
    return pd.DataFrame(data)


def target_range_of(frame: Any, column: str) -> list[float]:
    """Training target min/max from a column of the reference data."""
    if frame is None:
        raise ReferenceDataError(f"target column {column!r} was given but no reference data; pass --reference-data with that column")
    if column not in frame.columns:
        raise ReferenceDataError(f"reference data has no target column {column!r}; its columns: {[str(c) for c in frame.columns]}")
    values = frame[column].dropna()
    if values.empty:
        raise ReferenceDataError(f"target column {column!r} holds no values")
    return [float(values.min()), float(values.max())]


def reference_frames(
    reference_data: Any, example: Any, columns: list[Column], options: BuildOptions, *, categories: dict[str, list[Any]], ranges: dict[str, tuple[float, float]]
) -> tuple[Any, Any]:
    """``(base, real)``: all reference rows (real + synthesised) and the real ones alone."""
    import pandas as pd

    if reference_data is not None:
        frame = read_reference(reference_data, columns)
        if len(frame) > options.max_reference_rows:
            frame = frame.sample(n=options.max_reference_rows, random_state=options.seed).sort_index()
        real = select(frame, columns)
        return real, real
    if example is None:
        raise ReferenceDataError(
            "the model was logged without an input example, so there is nothing to test parity on; "
            "pass --reference-data FILE (CSV or Parquet with the model's columns)"
        )
    missing = [c.name for c in columns if c.name not in example.columns]
    if missing:
        raise ReferenceDataError(f"the logged input example lacks the model's columns {missing}; pass --reference-data")
    real = select(example, columns)
    synth = synthesize(real, columns, rows=options.synth_rows, seed=options.seed, categories=categories, ranges=ranges)
    base = pd.concat([real.astype(object), synth.astype(object)], ignore_index=True)
    for col in columns:
        if col.kind == "numeric":
            base[col.name] = pd.to_numeric(base[col.name])
    return base, real
