"""Predictions match the original sklearn model; every bad input is an InputError naming it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import runtime
from runtime import InputError

from . import builder

TOL = 1e-4


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _expect_close(result: dict, label: Any, probabilities: np.ndarray, classes: tuple) -> None:
    assert result["prediction"] == label and type(result["prediction"]) is type(label)
    assert list(result["probabilities"]) == list(classes)
    assert np.allclose(list(result["probabilities"].values()), probabilities, atol=TOL)


# -- results ---------------------------------------------------------------------------------


def test_single_rows_match_sklearn(fire: builder.Built, fire_model: runtime.EdgeModel) -> None:
    frame = builder.fire_frame(60, seed=11)[0]
    expected_labels = fire.model.predict(frame)
    expected = fire.model.predict_proba(frame)
    assert frame["humidity_pct"].isna().any()  # missing values go through as NaN
    for row, label, proba in zip(_rows(frame), expected_labels, expected):
        result = fire_model.predict(row)
        _expect_close(result, int(label), proba, (0, 1))
        assert result["flags"] == [] or all(f.startswith(("out_of_range:", "unseen_category:")) for f in result["flags"])


def test_list_dataframe_and_batch_agree(fire_model: runtime.EdgeModel) -> None:
    frame = builder.fire_frame(40, seed=12)[0]
    singles = [fire_model.predict(row) for row in _rows(frame)]
    assert fire_model.predict(_rows(frame)) == singles
    assert fire_model.predict(frame) == singles
    batch = fire_model.predict_batch({c: frame[c].to_numpy() for c in frame.columns})
    assert batch["prediction"].tolist() == [r["prediction"] for r in singles]
    assert batch["prediction"].dtype == np.int64
    assert batch["probabilities"].shape == (40, 2)
    assert np.allclose(batch["probabilities"], [list(r["probabilities"].values()) for r in singles])
    assert batch["flags"] == {i: r["flags"] for i, r in enumerate(singles) if r["flags"]}
    assert batch["flags"]  # the data has rows out of the training range
    # Plain lists work as columns too, and a generator of rows as rows.
    listed = fire_model.predict_batch({c: frame[c].tolist() for c in frame.columns})
    assert listed["prediction"].tolist() == batch["prediction"].tolist()
    assert fire_model.predict(row for row in _rows(frame)) == singles


def test_string_labels_keep_their_type(levels: builder.Built) -> None:
    model = runtime.load(levels.path)
    assert model.classes == ("high", "low", "medium")
    frame = levels.frame.iloc[:30]
    results = model.predict(frame)
    expected = levels.model.predict_proba(frame)
    for result, label, proba in zip(results, levels.model.predict(frame), expected):
        _expect_close(result, str(label), proba, model.classes)
    batch = model.predict_batch({c: frame[c].to_numpy() for c in frame.columns})
    assert batch["prediction"].tolist() == [str(x) for x in levels.model.predict(frame)]
    assert batch["probabilities"].shape == (30, 3)


def test_regression_results(burn: builder.Built) -> None:
    model = runtime.load(burn.path)
    assert model.classes is None and model.task == "regression"
    frame = builder.fire_frame(30, seed=13)[0]
    results = model.predict(frame)
    assert all(set(r) == {"prediction", "flags"} and isinstance(r["prediction"], float) for r in results)
    # float32 thresholds may route a rare row to another leaf (the parity gate's business);
    # nearly all rows must agree.
    close = np.isclose([r["prediction"] for r in results], burn.model.predict(frame), rtol=1e-4, atol=1e-3)
    assert close.mean() >= 0.9
    batch = model.predict_batch({c: frame[c].to_numpy() for c in frame.columns})
    assert batch["prediction"].dtype == np.float64 and batch["prediction"].shape == (30,)


def test_numpy_scalars_are_accepted(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    plain = fire_model.predict(good_row)
    typed = {
        "temp c": np.float32(25.0),
        "humidity_pct": np.float64(20.5),
        "wind_kmh": np.int64(12),
        "region": np.str_("north"),
        "vegetation": "grass",
    }
    assert fire_model.predict(typed) == plain


def test_input_mapping_is_not_changed(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    before = dict(good_row)
    fire_model.predict(good_row)
    assert good_row == before


# -- guardrails -------------------------------------------------------------------------------


def test_unseen_category_and_out_of_range_are_flagged(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    result = fire_model.predict({**good_row, "region": "highlands", "temp c": 80.0})
    assert result["flags"] == ["out_of_range:temp c", "unseen_category:region"]
    low = fire_model.predict({**good_row, "wind_kmh": -50.0})
    assert low["flags"] == ["out_of_range:wind_kmh"]
    batch = fire_model.predict_batch({k: [v, v] for k, v in {**good_row, "vegetation": "moss"}.items()})
    assert batch["flags"] == {0: ["unseen_category:vegetation"], 1: ["unseen_category:vegetation"]}
    clean = fire_model.predict_batch({k: [v, v] for k, v in good_row.items()})
    assert clean["flags"] == {}


def test_values_on_the_range_edges_are_not_flagged(fire: builder.Built, fire_model: runtime.EdgeModel, good_row: dict) -> None:
    low, high = fire_model.inputs[0].range  # type: ignore[misc]
    assert low == fire.frame["temp c"].min() and high == fire.frame["temp c"].max()
    assert fire_model.predict({**good_row, "temp c": low})["flags"] == []
    assert fire_model.predict({**good_row, "temp c": high})["flags"] == []


def test_regression_prediction_outside_target_range_is_flagged(tmp_path: Path, burn: builder.Built) -> None:
    def narrow(manifest: dict) -> None:
        manifest["outputs"]["target_range"] = [0.0, 60.0]

    model = runtime.load(builder.rewrite(burn.path, tmp_path / "narrow.edgepkg", edit=narrow))
    row = {"temp c": 30.0, "humidity_pct": 10.0, "wind_kmh": 20.0, "region": "south", "vegetation": "grass"}
    result = model.predict(row)
    assert result["prediction"] > 60.0
    assert result["flags"] == ["prediction_out_of_range"]
    cool = model.predict({**row, "temp c": 10.0, "region": "north"})
    assert cool["prediction"] < 60.0 and cool["flags"] == []
    batch = model.predict_batch({k: [v, v] for k, v in row.items()})
    assert batch["flags"] == {0: ["prediction_out_of_range"], 1: ["prediction_out_of_range"]}
    mixed = model.predict_batch({k: [v, 10.0 if k == "temp c" else v] for k, v in row.items()})
    assert list(mixed["flags"]) == [0]


def test_strict_refuses_unseen_category_and_extra_keys(fire: builder.Built, good_row: dict) -> None:
    model = runtime.load(fire.path, strict=True)
    with pytest.raises(InputError, match="feature 'region' got 'highlands', a value never seen in training \\(strict mode\\); expected a string \\(known values: 'east', 'north', 'south', 'west'\\)") as info:
        model.predict({**good_row, "region": "highlands"})
    assert info.value.feature == "region"
    with pytest.raises(InputError, match="unexpected feature\\(s\\) 'station' \\(strict mode\\)"):
        model.predict({**good_row, "station": "A7"})
    with pytest.raises(InputError, match="row 1: feature 'region' got 'highlands'"):
        model.predict_batch({k: [v, "highlands" if k == "region" else v] for k, v in good_row.items()})
    with pytest.raises(InputError, match="unexpected feature\\(s\\) 'station'"):
        model.predict_batch({**{k: [v] for k, v in good_row.items()}, "station": ["A7"]})
    # Out of range is never an error, only a flag.
    assert model.predict({**good_row, "temp c": 99.0})["flags"] == ["out_of_range:temp c"]


def test_extra_keys_are_ignored_by_default(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    assert fire_model.predict({**good_row, "station": "A7"}) == fire_model.predict(good_row)


# -- input errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "feature", "message"),
    [
        ({"temp c": "hot"}, "temp c", "feature 'temp c' got str 'hot'; expected a number (training range"),
        ({"temp c": "31.5"}, "temp c", "feature 'temp c' got str '31.5'; expected a number"),
        ({"wind_kmh": None}, "wind_kmh", "feature 'wind_kmh' is not nullable but got a missing value (null/None/NaN); expected a number"),
        ({"wind_kmh": float("nan")}, "wind_kmh", "feature 'wind_kmh' is not nullable but got a missing value"),
        ({"wind_kmh": [1.0]}, "wind_kmh", "feature 'wind_kmh' got list [1.0]; expected a number"),
        ({"region": 3}, "region", "feature 'region' got int 3; expected a string (known values: 'east', 'north', 'south', 'west')"),
        ({"region": None}, "region", "feature 'region' is not nullable but got a missing value"),
        ({"region": True}, "region", "feature 'region' got bool True; expected a string"),
        ({"vegetation": b"grass"}, "vegetation", "feature 'vegetation' got bytes b'grass'; expected a string"),
    ],
)
def test_bad_values(fire_model: runtime.EdgeModel, good_row: dict, change: dict, feature: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        fire_model.predict({**good_row, **change})
    assert message in str(info.value)
    assert info.value.feature == feature
    assert isinstance(info.value, ValueError)


def test_missing_features_are_all_listed(fire_model: runtime.EdgeModel) -> None:
    with pytest.raises(InputError, match="missing feature\\(s\\) 'humidity_pct', 'region'; this model takes: temp c, humidity_pct, wind_kmh, region, vegetation"):
        fire_model.predict({"temp c": 20.0, "wind_kmh": 3.0, "vegetation": "grass"})


def test_missing_features_win_over_bad_values(fire_model: runtime.EdgeModel) -> None:
    with pytest.raises(InputError, match="missing feature\\(s\\) 'humidity_pct'"):
        fire_model.predict({"temp c": "hot", "wind_kmh": 3.0, "region": "north", "vegetation": "grass"})


def test_nullable_numeric_takes_none_and_nan(fire: builder.Built, fire_model: runtime.EdgeModel, good_row: dict) -> None:
    with_none = fire_model.predict({**good_row, "humidity_pct": None})
    with_nan = fire_model.predict({**good_row, "humidity_pct": float("nan")})
    assert with_none == with_nan
    frame = pd.DataFrame([{**good_row, "humidity_pct": np.nan}])
    assert np.allclose(list(with_none["probabilities"].values()), fire.model.predict_proba(frame)[0], atol=TOL)


def test_bad_row_in_a_list_names_the_row(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    rows = [good_row, good_row, {**good_row, "temp c": "hot"}]
    with pytest.raises(InputError, match="^row 2: feature 'temp c' got str 'hot'") as info:
        fire_model.predict(rows)
    assert (info.value.row, info.value.feature) == (2, "temp c")
    with pytest.raises(InputError, match="^row 1: expected a mapping of feature name -> value, got list"):
        fire_model.predict([good_row, [1, 2]])


@pytest.mark.parametrize("data", [42, "temp c", None, b"rows"])
def test_predict_refuses_other_types(fire_model: runtime.EdgeModel, data: Any) -> None:
    with pytest.raises(InputError, match="predict expects a mapping of feature -> value, a sequence of mappings or a DataFrame"):
        fire_model.predict(data)


def test_empty_inputs(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    with pytest.raises(InputError, match="expected at least one row"):
        fire_model.predict([])
    with pytest.raises(InputError, match="expected at least one row"):
        fire_model.predict_batch({k: [] for k in good_row})


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"temp c": np.ones((3, 1))}, "feature 'temp c' must be a 1-D array of shape (N,), got shape (3, 1)"),
        ({"temp c": 25.0}, "feature 'temp c' must be a 1-D array or list of values, got float"),
        ({"temp c": "25"}, "feature 'temp c' must be a 1-D array or list of values, got str"),
        ({"wind_kmh": [1.0, 2.0]}, "feature 'wind_kmh' has 2 values but 'temp c' has 3"),
        ({"temp c": np.array(["a", "b", "c"])}, "feature 'temp c' expects numbers, got an array of <U1 (first value np.str_('a'))"),
        ({"temp c": [1.0, "x", 2.0]}, "row 1: feature 'temp c' got str 'x'; expected a number"),
        ({"region": np.array([1.0, 2.0, 3.0])}, "feature 'region' expects strings, got an array of float64"),
        ({"region": ["north", 5, "south"]}, "row 1: feature 'region' got int 5; expected a string"),
        # Worded as the row path words it (test_bad_values).
        ({"wind_kmh": [1.0, np.nan, 2.0]}, "row 1: feature 'wind_kmh' is not nullable but got a missing value (null/None/NaN); expected a number"),
        ({"wind_kmh": [1.0, None, 2.0]}, "row 1: feature 'wind_kmh' is not nullable but got a missing value (null/None/NaN); expected a number"),
    ],
)
def test_predict_batch_bad_columns(fire_model: runtime.EdgeModel, columns: dict, message: str) -> None:
    base = {"temp c": [20.0, 21.0, 22.0], "humidity_pct": [10.0, None, 30.0], "wind_kmh": [1.0, 2.0, 3.0],
            "region": ["north", "south", "east"], "vegetation": ["grass", "grass", "shrub"]}
    with pytest.raises(InputError) as info:
        fire_model.predict_batch({**base, **columns})
    assert message in str(info.value)


def test_predict_batch_missing_columns(fire_model: runtime.EdgeModel) -> None:
    with pytest.raises(InputError, match="missing feature\\(s\\) 'region', 'vegetation'"):
        fire_model.predict_batch({"temp c": [1.0], "humidity_pct": [1.0], "wind_kmh": [1.0]})
    with pytest.raises(InputError, match="predict_batch expects a mapping of feature name -> 1-D array, got list"):
        fire_model.predict_batch([{"temp c": 1.0}])  # type: ignore[arg-type]


def test_predict_batch_nullable_column_with_none(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    batch = fire_model.predict_batch({**{k: [v, v] for k, v in good_row.items()}, "humidity_pct": [None, float("nan")]})
    single = fire_model.predict({**good_row, "humidity_pct": None})
    assert batch["prediction"].tolist() == [single["prediction"]] * 2
    assert np.allclose(batch["probabilities"][0], list(single["probabilities"].values()))


def test_number_too_big_for_the_tensor(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    with pytest.raises(InputError, match="feature 'temp c' got 1000000000.*, which does not fit float32"):
        fire_model.predict({**good_row, "temp c": 10**400})
    with pytest.raises(InputError, match="^row 1: feature 'temp c' got 1000000000.*, which does not fit float32"):
        fire_model.predict([good_row, {**good_row, "temp c": 10**400}])
    with pytest.raises(InputError, match="^row 1: feature 'temp c' got 1000000000.*, which does not fit float32"):
        fire_model.predict_batch({**{k: [v, v] for k, v in good_row.items()}, "temp c": [1.0, 10**400]})


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), 1e39, np.float64(-1e300)])
def test_values_float32_cannot_hold(fire_model: runtime.EdgeModel, good_row: dict, value: float) -> None:
    # Would become inf in the tensor; the original model refuses infinity too.
    message = f"feature 'wind_kmh' got {float(value)!r}, which does not fit float32 (finite values up to ±3.4e+38)"
    with pytest.raises(InputError) as info:
        fire_model.predict({**good_row, "wind_kmh": value})
    assert message in str(info.value)
    with pytest.raises(InputError, match="^row 1: feature 'wind_kmh' got .*, which does not fit float32"):
        fire_model.predict_batch({**{k: [v, v] for k, v in good_row.items()}, "wind_kmh": np.array([1.0, value])})
