"""Whatever a caller passes, the runtime answers with a result or an InputError, never anything else."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from runtime import InputError

FEATURES = ["temp c", "humidity_pct", "wind_kmh", "region", "vegetation"]

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["north", "south", "grass", "shrub", ""]),
    st.binary(max_size=4),
    st.lists(st.floats(), max_size=2),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.str_, st.text(max_size=4)),
)

rows = st.fixed_dictionaries({}, optional={name: anything for name in FEATURES})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=rows)
def test_any_row_gives_a_result_or_an_input_error(fire_model: runtime.EdgeModel, row: dict[str, Any]) -> None:
    try:
        result = fire_model.predict(row)
    except InputError as exc:
        assert exc.feature is None or exc.feature in FEATURES
        return
    assert result["prediction"] in (0, 1)
    assert all(0.0 <= p <= 1.0 for p in result["probabilities"].values())
    # The same row through the batch path gives the same answer.
    batch = fire_model.predict_batch({k: [v] for k, v in row.items()})
    assert batch["prediction"].tolist() == [result["prediction"]]
    assert batch["flags"].get(0, []) == result["flags"]
    assert math.isclose(float(batch["probabilities"][0][1]), result["probabilities"][1], abs_tol=1e-6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=st.fixed_dictionaries({}, optional={name: st.lists(anything, min_size=0, max_size=3) for name in FEATURES}))
def test_any_columns_give_arrays_or_an_input_error(fire_model: runtime.EdgeModel, columns: dict[str, list[Any]]) -> None:
    try:
        out = fire_model.predict_batch(columns)
    except InputError:
        return
    n = len(next(iter(columns.values())))
    assert out["prediction"].shape == (n,) and out["probabilities"].shape == (n, 2)
