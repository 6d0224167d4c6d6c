"""The batch checks: a fault anywhere in a large batch is named exactly.

A valid batch passes whole-batch checks; only a wrong one goes through the record-by-record
checks. These run the checks directly on a batch of many records, with one fault placed
at the start, the middle or the end, so the two paths must agree on where it is.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from home.errors import SchemaError
from home.schema import parse_batch

from .batches import batch

SIZE = 60
FAULTS: list[tuple[str, Any, str]] = [
    ("id", "not-a-uuid", ".id"),
    ("id", None, ".id"),
    ("ts", "2026-11-29T08:00:00Z", ".ts"),
    ("ts", False, ".ts"),
    ("model", "", ".model"),
    ("model", ["fire-risk"], ".model"),
    ("version", 3, ".version"),
    ("version", "v" * 257, ".version"),
    ("bundle_sha256", "abc", ".bundle_sha256"),
    ("inputs", [31.5], ".inputs"),
    ("outputs", None, ".outputs"),
    ("flags", ["ok", 3], ".flags"),
    ("flags", "sampled", ".flags"),
    ("device", "someone-else", ""),
]


@pytest.mark.parametrize("position", [0, SIZE // 2, SIZE - 1])
@pytest.mark.parametrize(("key", "value", "suffix"), FAULTS, ids=[f"{k}={v!r:.12}" for k, v, _ in FAULTS])
def test_a_single_fault_is_named_wherever_it_is(position: int, key: str, value: Any, suffix: str) -> None:
    document = orjson.loads(json.dumps(batch(SIZE)))
    document["records"][position][key] = value
    with pytest.raises(SchemaError) as caught:
        parse_batch(document, max_records=SIZE)
    assert caught.value.field == f"records[{position}]{suffix}"


def test_the_first_faulty_record_is_the_one_reported() -> None:
    document = orjson.loads(json.dumps(batch(SIZE)))
    document["records"][40]["ts"] = None
    document["records"][7]["flags"] = [1]
    with pytest.raises(SchemaError) as caught:
        parse_batch(document, max_records=SIZE)
    assert caught.value.field == "records[7].flags"


def test_a_valid_batch_comes_out_as_stored_columns() -> None:
    document = batch(SIZE, flags=["sampled"])
    document["records"][3]["id"] = document["records"][3]["id"].upper()
    document["records"][4]["ts"] = 1_790_000_000
    document["records"][5]["inputs"] = {"b": 1, "a": {"d": None, "c": "é"}}
    source = json.dumps(document).encode()

    parsed = parse_batch(orjson.loads(source), max_records=SIZE, source=source)

    records = parsed.records
    assert len(records) == SIZE
    assert records.id == [r["id"].lower() for r in document["records"]]
    assert records.ts[4] == 1_790_000_000.0 and all(type(ts) is float for ts in records.ts)
    assert records.inputs[5] == '{"a":{"c":"é","d":null},"b":1}'
    assert records.flags == ['["sampled"]'] * SIZE
    assert [json.loads(text) for text in records.outputs] == [r["outputs"] for r in document["records"]]


def test_an_integer_orjson_reads_as_a_float_is_found_from_the_source() -> None:
    document = batch(SIZE)
    document["records"][37]["outputs"] = {"prediction": 2**64 + 1}
    source = json.dumps(document).encode()

    with pytest.raises(SchemaError, match="expected an integer from") as caught:
        parse_batch(orjson.loads(source), max_records=SIZE, source=source)

    assert caught.value.field == "records[37].outputs.prediction"
