"""What the store keeps of the values in a record: canonical JSON, exactly what was sent.

The refusals (NaN, integers beyond 64 bits, unpaired surrogates, ...) are bad-input cases
in ``cases.py``; these are the values just inside those limits, which must be kept exactly.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.collector import RunningCollector

from .batches import batch, post


def _stored_text(collector: RunningCollector, device_id: str) -> dict[str, dict[str, Any]]:
    """The raw stored columns by record id, without decoding the JSON text."""
    rows = collector.rows("records", "WHERE device = ?", (device_id,))
    return {row["id"]: {key: row[key] for key in ("ts", "inputs", "outputs", "flags")} for row in rows}


def test_inputs_outputs_and_flags_are_stored_as_canonical_json(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(1, flags=["sampled", "out_of_range:temp_c"])
    sent = document["records"][0]
    sent["inputs"] = {"temp_c": 31.5, "region": "nörth", "alpha": None, "nested": {"z": [1, 2.5, "x"], "a": True}}
    sent["outputs"] = {"prediction": 1, "probabilities": {"1": 0.8, "0": 0.2}}

    assert post(shared.url, token, document).json() == {"accepted": 1, "duplicates": 0}

    stored = _stored_text(shared, device_id)[sent["id"]]
    for key in ("inputs", "outputs"):
        assert stored[key] == json.dumps(sent[key], sort_keys=True, separators=(",", ":"), ensure_ascii=False), key
    assert stored["flags"] == '["sampled","out_of_range:temp_c"]'
    assert isinstance(stored["inputs"], str), "stored as TEXT, so SQLite's JSON functions and any reader can use it"


def test_integers_up_to_64_bits_and_large_floats_are_stored_exactly(shared: RunningCollector, device: tuple[str, str]) -> None:
    # orjson reads integers past 64 bits as floats; these are the largest that must still
    # come back as the same integers, next to floats big enough to make the collector
    # look again at the body (and find nothing to refuse).
    device_id, token = device
    document = batch(2)
    document["records"][0]["inputs"] = {"u64": 2**64 - 1, "i64": -(2**63), "big_float": 1e19, "huge_float": -1.5e300}
    document["records"][1]["outputs"] = {"prediction": 9.3e18, "count": 2**63, "tiny": 5e-324}

    response = post(shared.url, token, document, gzipped=True)

    assert response.json() == {"accepted": 2, "duplicates": 0}, response.text
    stored = {row["id"]: row for row in shared.records(device_id)}
    for sent in document["records"]:
        row = stored[sent["id"]]
        assert row["inputs"] == sent["inputs"] and row["outputs"] == sent["outputs"]
        for key in ("inputs", "outputs"):
            assert {k: type(v) for k, v in row[key].items()} == {k: type(v) for k, v in sent[key].items()}, key


def test_a_string_that_looks_like_a_big_exponent_is_kept(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(1)
    document["records"][0]["inputs"] = {"note": "1e+19 and 18446744073709551616 in a string"}
    assert post(shared.url, token, document).json() == {"accepted": 1, "duplicates": 0}
    assert shared.records(device_id)[0]["inputs"] == document["records"][0]["inputs"]


def test_integer_timestamps_are_stored_as_floats(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(2)
    document["records"][0]["ts"] = 1_790_000_000
    # Past SQLite's signed 64-bit integers: it must become a float, not fail the insert.
    document["records"][1]["ts"] = 2**64 - 1

    assert post(shared.url, token, document).json() == {"accepted": 2, "duplicates": 0}

    stored = _stored_text(shared, device_id)
    assert stored[document["records"][0]["id"]]["ts"] == 1_790_000_000.0
    assert stored[document["records"][1]["id"]]["ts"] == float(2**64 - 1)
    assert all(type(row["ts"]) is float for row in stored.values())


def test_body_with_a_byte_order_mark_is_still_accepted(shared: RunningCollector, device: tuple[str, str]) -> None:
    # orjson refuses a UTF-8 byte order mark; the json module reads it, as the collector always did.
    device_id, token = device
    document = batch(2)

    response = httpx.post(
        f"{shared.url}/v1/batches",
        content=b"\xef\xbb\xbf" + json.dumps(document).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30.0,
    )

    assert response.json() == {"accepted": 2, "duplicates": 0}
    assert {row["id"] for row in shared.records(device_id)} == {r["id"] for r in document["records"]}


def test_mixed_case_hex_is_stored_lower_case(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(3)
    document["records"][0]["id"] = document["records"][0]["id"].upper()
    document["records"][1]["bundle_sha256"] = document["records"][1]["bundle_sha256"].upper()

    assert post(shared.url, token, document).json() == {"accepted": 3, "duplicates": 0}

    rows = shared.records(device_id)
    assert {row["id"] for row in rows} == {r["id"].lower() for r in document["records"]}
    assert {row["bundle_sha256"] for row in rows} == {document["records"][2]["bundle_sha256"]}


def test_the_smallest_doubles_and_zeros_written_with_big_exponents_are_kept(shared: RunningCollector, device: tuple[str, str]) -> None:
    # Just inside the underflow refusal: a real zero spelled with a huge exponent is zero,
    # the smallest subnormal is a double, and "1e-400" in a string is only text.
    device_id, token = device
    document = batch(1)
    document["records"][0]["inputs"] = {"zero": "@zero@", "neg_zero": "@negzero@", "tiny": 5e-324, "small": 2.2250738585072014e-308,
                                        "note": "1e-400"}
    text = json.dumps(document).encode().replace(b'"@zero@"', b"0e-500").replace(b'"@negzero@"', b"-0.000E-999")

    response = httpx.post(
        f"{shared.url}/v1/batches", content=text, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30.0,
    )

    assert response.json() == {"accepted": 1, "duplicates": 0}, response.text
    stored = shared.records(device_id)[0]["inputs"]
    assert stored == {"zero": 0.0, "neg_zero": -0.0, "tiny": 5e-324, "small": 2.2250738585072014e-308, "note": "1e-400"}
