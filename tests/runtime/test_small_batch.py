"""predict_batch on a few rows takes the row path: same results, flags and errors as the column path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import runtime
from runtime.model import SMALL_BATCH


def _columns(rows: list[dict[str, Any]], *, strings: str = "U") -> dict[str, np.ndarray]:
    out = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        if isinstance(values[0], str):
            out[name] = np.array(values, dtype=object) if strings == "O" else np.array(values)
        else:
            out[name] = np.array(values, dtype=np.float64)
    return out


def _rows(good_row: dict[str, Any], count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        row = dict(good_row)
        for name, value in row.items():
            if isinstance(value, float):
                row[name] = value + i
        rows.append(row)
    rows[-1] = {**rows[-1], "vegetation": "moss"}  # unseen: flagged
    return rows


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["prediction"], b["prediction"])
    if "probabilities" in a:
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=0, atol=0)
    assert {i: sorted(f) for i, f in a["flags"].items()} == {i: sorted(f) for i, f in b["flags"].items()}


@pytest.mark.parametrize("strings", ["U", "O"])
@pytest.mark.parametrize("count", [1, 3, SMALL_BATCH])
def test_a_small_batch_gives_what_the_column_path_gives(fire_model: runtime.EdgeModel, good_row: dict[str, Any], count: int, strings: str) -> None:
    rows = _rows(good_row, count)
    small = fire_model.predict_batch(_columns(rows, strings=strings))
    # The column path on the same rows: padded past SMALL_BATCH, then cut back.
    padded = fire_model.predict_batch(_columns(rows + [rows[0]] * (SMALL_BATCH + 1 - count), strings=strings))
    column = {k: (v[:count] if isinstance(v, np.ndarray) else {i: f for i, f in v.items() if i < count}) for k, v in padded.items()}
    _same(small, column)
    singles = [fire_model.predict(row) for row in rows]
    assert small["prediction"].tolist() == [r["prediction"] for r in singles]
    assert small["flags"].get(count - 1) == singles[-1]["flags"] != []


def test_an_error_in_a_small_batch_names_the_row_like_the_column_path(fire_model: runtime.EdgeModel, good_row: dict[str, Any]) -> None:
    numeric = next(name for name, value in good_row.items() if isinstance(value, float))
    rows = _rows(good_row, 3)
    columns = _columns(rows)
    columns[numeric] = np.array([1.0, 2.0, np.inf])
    with pytest.raises(runtime.InputError) as small:
        fire_model.predict_batch(columns)
    assert small.value.row == 2 and small.value.feature == numeric
    with pytest.raises(runtime.InputError, match="missing|expected"):
        fire_model.predict_batch({k: v for k, v in _columns(rows).items() if k != numeric})
