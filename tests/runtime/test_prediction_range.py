"""``prediction_out_of_range``: the same rows are flagged by every path, a NaN prediction included."""

from __future__ import annotations

import numpy as np

from runtime.outputs import OutputSpec

SPEC = OutputSpec({"outputs": {"task": "regression", "prediction": "variable", "target_range": [0.0, 10.0]}},
                  {"variable": ("tensor(float)", [None, 1])})
VALUES = [5.0, -1.0, float("nan"), 10.0, 11.0]
FLAGGED = [1, 2, 4]


def test_every_path_flags_the_same_rows_nan_included() -> None:
    raw = np.asarray(VALUES, dtype=np.float32).reshape(-1, 1)
    single = [i for i, v in enumerate(VALUES) if SPEC.first([raw[i : i + 1]], [])["flags"]]
    one_row_arrays = [i for i, v in enumerate(VALUES) if SPEC.single_arrays([raw[i : i + 1]], [])["flags"]]
    rows = [i for i, result in enumerate(SPEC.rows([raw], [[] for _ in VALUES])) if result["flags"]]
    arrays = sorted(SPEC.arrays([raw], {})["flags"])
    assert single == one_row_arrays == rows == arrays == FLAGGED
