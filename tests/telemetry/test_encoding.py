"""Values from the application (numpy included) survive the trip to JSON without numpy imports."""

from __future__ import annotations

import enum
import json
import math

import numpy as np

from telemetry.encoding import names_of, pack, plain, to_json, unpack


class Region(enum.IntEnum):
    NORTH = 1


def test_builtin_values_round_trip_through_the_disk_format() -> None:
    inputs = {"temp_c": 31.5, "region": "north", "count": 3, "ok": True, "missing": None, "tags": ["a", "b"]}
    outputs = {"prediction": 1, "probabilities": {0: 0.2, 1: 0.8}}
    names = names_of(inputs)
    assert unpack(names, pack(tuple(inputs.values()), outputs, ("flag",))) == (inputs, outputs, ("flag",))


def test_numpy_scalars_and_arrays_become_plain_json() -> None:
    inputs = {
        "f32": np.float32(1.5),
        "f64": np.float64(2.25),
        "i64": np.int64(7),
        "flag": np.bool_(True),
        "vector": np.array([1.0, 2.0]),
        "matrix": np.arange(4).reshape(2, 2),
        "name": np.str_("north"),
    }
    outputs = {"prediction": np.int64(1), "probabilities": {np.int64(0): np.float32(0.25), np.int64(1): np.float32(0.75)}}
    restored = unpack(names_of(inputs), pack(tuple(inputs.values()), outputs, ()))
    text = to_json({"inputs": restored[0], "outputs": restored[1]})
    assert json.loads(text) == {
        "inputs": {"f32": 1.5, "f64": 2.25, "i64": 7, "flag": True, "vector": [1.0, 2.0], "matrix": [[0, 1], [2, 3]], "name": "north"},
        "outputs": {"prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}},
    }


def test_values_json_cannot_express_are_kept_as_null_or_text() -> None:
    value = {"nan": math.nan, "inf": -math.inf, "arr": np.array([np.nan, 1.0]), "set": {3}, "raw": b"\x01\x02", "enum": Region.NORTH, "obj": object}
    parsed = json.loads(to_json(value))
    assert parsed["nan"] is None and parsed["inf"] is None and parsed["arr"] == [None, 1.0]
    assert parsed["set"] == [3] and parsed["raw"] == "0102" and parsed["enum"] == 1
    assert parsed["obj"] == "<class 'object'>"


def test_plain_leaves_json_types_alone() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": False}]}
    assert plain(value) == value
    assert to_json(value) == '{"a":[1,2.5,"x",null,true,{"b":false}]}'


def test_non_str_input_names_are_stored_as_text_and_a_mismatch_is_refused() -> None:
    inputs = {np.str_("temp"): 1.0, 3: 2.0}
    names = names_of(inputs)
    assert names == ("temp", "3") and all(type(name) is str for name in names)
    blob = pack(tuple(inputs.values()), {}, ())
    assert unpack(names, blob)[0] == {"temp": 1.0, "3": 2.0}
    try:
        unpack(("only-one",), blob)
    except ValueError as exc:
        assert "2 input values for 1 input names" in str(exc)
    else:
        raise AssertionError("a names/values mismatch must not pass silently")
