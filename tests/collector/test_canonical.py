"""The fast path of the MessagePack batch (``home.canonical``): records of plain values are
stored exactly as the general path, and the device's JSON twin, store them."""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from home.body import decode_json
from home.canonical import _struct_texts, decode_plain, plain_inputs, texts
from home.packed import parse_packed
from home.schema import parse_batch

SHA = "ab" * 32
INT_PROBS = {"prediction": 1, "probabilities": {0: 0.25, 1: 0.75}}
STR_PROBS = {"prediction": "yes", "probabilities": {"yes": 0.5, "no": 0.5}, "score": None}
SHAPES: dict[str, tuple[list[str], list[list[Any]], dict[Any, Any]]] = {
    "numbers and text": (["temp c", "b", "region", "a"], [[31.5, -0.0, "north", 7], [1e300, 2**64 - 1, "é ü", -(2**63)]], INT_PROBS),
    "str-keyed probabilities": (["x", "y"], [[True, None], [False, ""]], STR_PROBS),
    "a string holding the cut": (["note", "n"], [["},{", 1], ["{\"a\":1},{", 2]], {"label": "},{", "p": {"},{": 1.0}}),
    "non-finite floats": (["x", "y"], [[math.nan, math.inf], [-math.inf, 0.5]], {"prediction": math.nan}),
    "duplicate names": (["x", "x", "a"], [[1, 2, 3], [4, 5, 6]], INT_PROBS),
    "one name": (["only"], [["v"], [2.5]], INT_PROBS),
    "no inputs": ([], [[], []], {}),
}


def _bodies(names: list[str], rows: list[list[Any]], outputs: dict[Any, Any]) -> tuple[bytes, bytes]:
    """The packed body and the device's JSON body of the same records."""
    ids = [str(uuid.uuid4()) for _ in rows]
    stamps = [1_790_000_000.0 + i for i in range(len(rows))]
    flags = [["out_of_range:x"] if i % 2 else [] for i in range(len(rows))]
    group = {"model": "m", "version": "1", "bundle_sha256": SHA, "inputs": names, "ids": "".join(ids),
             "ts": struct.pack(f"<{len(rows)}d", *stamps), "records": [[row, outputs, f] for row, f in zip(rows, flags)]}
    packed = msgspec.msgpack.encode({"batch_id": "b", "groups": [group]})
    records = [{"id": i, "ts": t, "model": "m", "version": "1", "bundle_sha256": SHA, "inputs": dict(zip(names, row)),
                "outputs": outputs, "flags": f} for i, t, row, f in zip(ids, stamps, rows, flags)]
    as_json = orjson.dumps({"batch_id": "b", "records": records}, option=orjson.OPT_NON_STR_KEYS)
    return packed, as_json


@pytest.mark.parametrize("shape", list(SHAPES))
def test_plain_records_take_the_fast_path_and_are_stored_as_their_json_twin(shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names, rows, outputs = SHAPES[shape]
    packed, as_json = _bodies(names, rows, outputs)
    raw = msgspec.msgpack.encode([[row, outputs, []] for row in rows])
    assert decode_plain(raw) is not None  # the fast path, not the general one
    fast = parse_packed(packed, max_records=100).records
    twin = parse_batch(decode_json(as_json), max_records=100, source=as_json).records
    assert fast == twin
    monkeypatch.setattr("home.packed.decode_plain", lambda raw: None)
    assert parse_packed(packed, max_records=100).records == fast  # and as the general path stores them


@pytest.mark.parametrize(
    "outputs",
    [{"p": {0: 0.5, "1": 0.5}}, {"p": [1, 2]}, {"p": {"q": {"r": 1}}}, {1: "int key at the top"}, {"p": {1.5: 1}}],
    ids=["mixed-keys", "array", "nested", "int-top-key", "float-key"],
)
def test_other_outputs_take_the_general_path(outputs: dict[Any, Any]) -> None:
    raw = msgspec.msgpack.encode([[[1.5], {"prediction": 1}, []], [[2.5], outputs, []]])
    assert decode_plain(raw) is None
    packed, _ = _bodies(["x"], [[1.5], [2.5]], outputs)
    assert len(parse_packed(packed, max_records=100).records) == 2


@pytest.mark.parametrize("value", [b"\x00\x01", [1, 2], {"k": "v"}, msgspec.msgpack.Ext(1, b"x")], ids=["bin", "array", "map", "ext"])
def test_other_inputs_take_the_general_path(value: Any) -> None:
    assert decode_plain(msgspec.msgpack.encode([[[1.5, value], {"prediction": 1}, []]])) is None


def test_texts_cut_one_dumps_into_the_text_of_each_object() -> None:
    objects = [{"a": 1}, {}, {"b": {"c": [1, 2]}}, {"s": "},{"}, {"t": "x"}]
    assert texts(objects, 0) == [orjson.dumps(o).decode() for o in objects]
    plain = [{"a": i, "b": {"c": i}} for i in range(50)]
    assert texts(plain, orjson.OPT_SORT_KEYS) == [orjson.dumps(o, option=orjson.OPT_SORT_KEYS).decode() for o in plain]
    assert texts([], 0) == []


_NAMES = st.lists(st.text(max_size=8), min_size=2, max_size=12, unique=True)
_SCALARS = st.one_of(
    st.floats(),  # NaN, ±inf, subnormals, 1e+300: every float
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=6) | st.sampled_from(["}", "},{", "1e5", "x2e7", "{", ""]),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_plain_inputs_write_what_orjson_writes_of_each_record(data: st.DataObject) -> None:
    names = data.draw(_NAMES)
    rows = data.draw(st.lists(st.lists(_SCALARS, min_size=len(names), max_size=len(names)), min_size=1, max_size=8))
    records = [[row, {}, []] for row in rows]
    expected = [orjson.dumps(dict(zip(names, row)), option=orjson.OPT_SORT_KEYS).decode() for row in rows]
    assert plain_inputs(names, records) == expected


def test_plain_inputs_of_ordinary_records_take_the_struct_path_and_others_fall_back() -> None:
    names = ["temp_c", "zone3", "b", "region"]  # "e3" in a name is not an exponent
    rows = [[21.5, 3, -0.25, "north"], [1e-7, -(2**63), 2**64 - 1, "é"]]
    records = [[row, {}, []] for row in rows]
    assert _struct_texts(names, records) == [orjson.dumps(dict(zip(names, r)), option=orjson.OPT_SORT_KEYS).decode() for r in rows]
    for name, values in {
        "a float msgspec writes as 1e16, orjson as 1e+16": [1e16, 0, 0, "n"],
        "a string that looks like one": [0.5, 0, 0, "2e5"],
        "a string holding a brace": [0.5, 0, 0, "}"],
    }.items():
        odd = [*records, [values, {}, []]]
        assert _struct_texts(names, odd) is None, name
        assert plain_inputs(names, odd)[-1] == orjson.dumps(dict(zip(names, values)), option=orjson.OPT_SORT_KEYS).decode()
    quoted = ['say "hi"', "b"]  # msgspec takes no quote in a field's name
    assert _struct_texts(quoted, [[[1, 2], {}, []]]) is None
    assert plain_inputs(quoted, [[[1, 2], {}, []]]) == ['{"b":2,"say \\"hi\\"":1}']
