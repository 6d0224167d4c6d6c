"""The MessagePack batch at a real collector, on both stores: accepted in every encoding,
stored exactly as the JSON batch of the same records, replays in either format counted
as duplicates, counters kept."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from tests.support.collector import RunningCollector

from .batches import batch, packed, post, post_packed, record


def _rows(collector: RunningCollector, device: str) -> dict[str, tuple[Any, ...]]:
    keys = ("ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")
    return {row["id"]: tuple(row[k] for k in keys) for row in collector.rows("records", "WHERE device = ?", (device,))}


def _mixed(n: int) -> dict[str, Any]:
    document = batch(n, counters={"dropped": 4, "sampled_out": 1, "dead_lettered": 0, "lost": 2})
    for i, item in enumerate(document["records"]):
        item["inputs"] = {"z": i, "a": [1.5, None, "é"], "m": {"y": True, "x": -0.0}, "big": 2**64 - 1}
        item["flags"] = ["out_of_range:z"] if i % 2 else []
        if i >= n // 2:
            item["model"], item["version"] = "other-model", "7"  # a second group
    return document


@pytest.mark.parametrize("encoding", ["zstd", "gzip", None])
def test_a_packed_batch_is_stored_as_its_json_twin_and_replays_are_duplicates(
    shared: RunningCollector, device: tuple[str, str], encoding: str | None
) -> None:
    device_id, token = device
    twin_id = f"twin-{uuid.uuid4().hex[:8]}"
    twin_token = shared.add_device(twin_id)
    document = _mixed(9)
    body = packed(document, group_size=3)
    for group in body["groups"]:
        for item in group["records"]:
            item[1]["probabilities"] = {0: 0.2, 1: 0.8}  # integer keys, as the runtime hands them over

    answer = post_packed(shared.url, token, body, encoding=encoding)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 9, "duplicates": 0}
    assert post(shared.url, twin_token, document, gzipped=True).json() == {"accepted": 9, "duplicates": 0}
    assert _rows(shared, device_id) == _rows(shared, twin_id) and len(_rows(shared, device_id)) == 9

    assert post(shared.url, token, document).json() == {"accepted": 0, "duplicates": 9}
    assert post_packed(shared.url, twin_token, body, encoding=encoding).json() == {"accepted": 0, "duplicates": 9}
    stats = shared.stats(token)
    assert stats["records"] == 9 and stats["by_model"] == {"fire-risk": {"3": 4}, "other-model": {"7": 5}}
    assert stats["counters"] == {"dropped": 4, "sampled_out": 1, "dead_lettered": 0, "lost": 2}


def test_ids_repeated_inside_a_packed_batch_count_as_duplicates(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    first = record()
    document = {"batch_id": "b", "records": [first, record(), dict(first, inputs={"temp_c": 1.0, "region": "south"})]}
    assert post_packed(shared.url, token, packed(document)).json() == {"accepted": 2, "duplicates": 1}
    kept = next(row for row in shared.records(device_id) if row["id"] == first["id"])
    assert kept["inputs"] == first["inputs"]  # the first content stays


def test_nan_and_infinity_in_a_packed_batch_are_stored_as_null_like_the_devices_json(
    shared: RunningCollector, device: tuple[str, str]
) -> None:
    # MessagePack carries NaN; strict JSON (the stored form) cannot. A device's JSON always
    # sent them as null, so the packed batch stores null too, and both stay duplicates.
    device_id, token = device
    document = batch(1)
    document["records"][0]["inputs"] = {"temp_c": math.nan, "wind": -math.inf}
    assert post_packed(shared.url, token, packed(document)).json() == {"accepted": 1, "duplicates": 0}
    assert shared.records(device_id)[0]["inputs"] == {"temp_c": None, "wind": None}


def test_text_beyond_ascii_is_not_mistaken_for_nested_maps(shared: RunningCollector, device: tuple[str, str]) -> None:
    # UTF-8 continuation bytes look like MessagePack container headers to the quick count;
    # the exact count clears such records.
    device_id, token = device
    document = batch(20)
    for item in document["records"]:
        item["inputs"] = {"note": "火灾风险很高" * 200, "города": "Санкт-Петербург" * 50}
    assert post_packed(shared.url, token, packed(document)).json() == {"accepted": 20, "duplicates": 0}
    assert shared.records(device_id)[0]["inputs"]["note"].startswith("火灾风险很高")


def test_tiny_records_in_many_groups_are_not_mistaken_for_nested_maps(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = {"batch_id": "tiny", "records": [record(inputs={"x": i}, outputs={"p": 0}, model=f"m{i % 7}") for i in range(200)]}
    assert post_packed(shared.url, token, packed(document)).json() == {"accepted": 200, "duplicates": 0}
    assert len(shared.records(device_id)) == 200
