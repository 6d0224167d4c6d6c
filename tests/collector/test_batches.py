"""Storing batches: exactly once per (device, record id), all or nothing, counters and stats."""

from __future__ import annotations

import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.collector import RunningCollector

from .batches import SHA, batch, post, record


def test_records_are_stored_with_every_field(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(2, flags=["out_of_range:temp_c"])
    document["records"][1].update(model="flood", version="12", inputs={"level_m": None}, outputs={"prediction": 0.25})
    before = time.time()

    response = post(shared.url, token, document)

    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 0}
    stored = {row["id"]: row for row in shared.records(device_id)}
    assert set(stored) == {r["id"] for r in document["records"]}
    for sent in document["records"]:
        row = stored[sent["id"]]
        assert row["device"] == device_id
        assert row["batch_id"] == document["batch_id"]
        assert before - 1 <= row["received_at"] <= time.time() + 1
        for key in ("ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags"):
            assert row[key] == sent[key], key


def test_replay_stores_nothing_twice_and_answers_the_same_counts(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(25)

    first = post(shared.url, token, document)
    replay = post(shared.url, token, document)
    replay_gzip = post(shared.url, token, document, gzipped=True)

    assert first.json() == {"accepted": 25, "duplicates": 0}
    assert replay.json() == {"accepted": 0, "duplicates": 25}
    assert replay_gzip.json() == {"accepted": 0, "duplicates": 25}
    assert len(shared.records(device_id)) == 25


def test_overlapping_batch_stores_only_the_new_records(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    old = batch(4)
    post(shared.url, token, old)
    mixed = {"batch_id": "retry-with-more", "records": old["records"][:2] + [record() for _ in range(3)]}

    response = post(shared.url, token, mixed)

    assert response.json() == {"accepted": 3, "duplicates": 2}
    assert len(shared.records(device_id)) == 7


def test_full_size_batch_at_the_default_limits(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(5000)
    assert post(shared.url, token, document, gzipped=True).json() == {"accepted": 5000, "duplicates": 0}
    over = batch(5001)
    refused = post(shared.url, token, over, gzipped=True)
    assert refused.status_code == 422
    assert "batch has 5001 records; at most 5000" in refused.json()["error"]
    assert len(shared.records(device_id)) == 5000


def test_record_id_repeated_inside_one_batch_is_stored_once(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    twin = record()
    response = post(shared.url, token, {"batch_id": "twins", "records": [twin, dict(twin), record()]})
    assert response.json() == {"accepted": 2, "duplicates": 1}
    assert len(shared.records(device_id)) == 2


def test_uuid_spelling_does_not_defeat_deduplication(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    lower = record()
    upper = dict(lower, id=lower["id"].upper())
    assert post(shared.url, token, {"batch_id": "a", "records": [lower]}).json() == {"accepted": 1, "duplicates": 0}
    assert post(shared.url, token, {"batch_id": "b", "records": [upper]}).json() == {"accepted": 0, "duplicates": 1}
    assert [row["id"] for row in shared.records(device_id)] == [lower["id"]]


def test_same_record_id_from_two_devices_is_two_records(shared: RunningCollector) -> None:
    shared_record = record()
    answers = []
    for name in (f"twin-a-{uuid.uuid4().hex[:6]}", f"twin-b-{uuid.uuid4().hex[:6]}"):
        token = shared.add_device(name)
        answers.append(post(shared.url, token, {"batch_id": "x", "records": [shared_record]}).json())
        assert [row["id"] for row in shared.records(name)] == [shared_record["id"]]
    assert answers == [{"accepted": 1, "duplicates": 0}] * 2


def test_device_comes_from_the_token(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    document = batch(1)
    assert post(shared.url, token, document).status_code == 200
    assert [row["device"] for row in shared.records() if row["id"] == document["records"][0]["id"]] == [device_id]


def test_concurrent_batches_from_several_devices_are_all_stored(shared: RunningCollector) -> None:
    names = [f"{place}-{uuid.uuid4().hex[:6]}" for place in ("north", "south", "east", "west")]
    devices = {name: shared.add_device(name) for name in names}
    # Three batches per device at once: within the per-device limit of uploads in progress (4).
    jobs = [(name, token, batch(40)) for _ in range(3) for name, token in devices.items()]

    def send(job: tuple[str, str, dict]) -> httpx.Response:
        name, token, document = job
        return post(shared.url, token, document, gzipped=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = list(pool.map(send, jobs))
        # The same batches again, concurrently: every one must come back as duplicates.
        replays = list(pool.map(send, jobs))

    assert [r.json() for r in first] == [{"accepted": 40, "duplicates": 0}] * len(jobs)
    assert [r.json() for r in replays] == [{"accepted": 0, "duplicates": 40}] * len(jobs)
    for name in devices:
        stored = shared.records(name)
        assert len(stored) == 120
        assert {row["id"] for row in stored} == {r["id"] for n, _, d in jobs if n == name for r in d["records"]}
    device_rows = shared.devices()
    assert all(device_rows[name]["batches"] == 6 for name in devices)


def test_counters_keep_the_largest_value_per_device(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    post(shared.url, token, batch(1, counters={"dropped": 5, "sampled_out": 1, "dead_lettered": 0}))
    # An older batch arriving late carries smaller cumulative totals: they must not win.
    post(shared.url, token, batch(1, counters={"dropped": 3, "sampled_out": 9, "dead_lettered": 2}))
    # A batch without counters leaves them alone; one with no records still updates them.
    post(shared.url, token, batch(1))
    response = post(shared.url, token, {"batch_id": "counters-only", "records": [], "counters": {"dropped": 6, "sampled_out": 0, "dead_lettered": 0}})

    assert response.json() == {"accepted": 0, "duplicates": 0}
    row = shared.devices()[device_id]
    assert (row["dropped"], row["sampled_out"], row["dead_lettered"], row["batches"]) == (6, 9, 2, 4)


def test_further_counters_are_kept_by_name_at_their_largest(shared: RunningCollector, device: tuple[str, str]) -> None:
    # A newer device reports more cumulative counts (records lost to a damaged buffer, ...).
    device_id, token = device
    known = {"dropped": 0, "sampled_out": 0, "dead_lettered": 0}
    for extra in ({"lost": 5, "corrupt_pages": 1}, {"lost": 3}, {"lost": 8, "corrupt_pages": 0}):
        assert post(shared.url, token, batch(1, counters={**known, **extra})).status_code == 200

    mine = shared.stats(token)

    assert mine["counters"] == {**known, "corrupt_pages": 1, "lost": 8}
    assert set(mine) >= {"dropped", "sampled_out", "dead_lettered"} and "lost" not in mine
    assert shared.devices()[device_id]["batches"] == 3


def test_stats_count_records_devices_models_and_counters(collector: RunningCollector) -> None:
    other = collector.add_device("device-2")
    admin = collector.add_admin("ops")
    empty = {"records": 0, "devices": 0, "by_model": {}, "dropped": 0, "sampled_out": 0, "dead_lettered": 0}
    assert collector.stats(admin) == {
        "scope": "fleet", "device": None, **empty, "counters": {"dropped": 0, "sampled_out": 0, "dead_lettered": 0},
    }
    post(collector.url, collector.token, batch(3, counters={"dropped": 4, "sampled_out": 0, "dead_lettered": 1}))
    post(collector.url, collector.token, batch(2, version="4"))
    post(collector.url, other, batch(5, model="flood", version="1", counters={"dropped": 10, "sampled_out": 3, "dead_lettered": 0, "lost": 7}))
    post(collector.url, other, batch(1, model="flood", version="1"))

    fleet = {
        "scope": "fleet",
        "device": None,
        "records": 11,
        "devices": 2,
        "by_model": {"fire-risk": {"3": 3, "4": 2}, "flood": {"1": 6}},
        "dropped": 14,
        "sampled_out": 3,
        "dead_lettered": 1,
        "counters": {"dropped": 14, "sampled_out": 3, "dead_lettered": 1, "lost": 7},
    }
    assert collector.stats(admin) == fleet
    # A device token sees its own device only, whoever else sent what.
    assert collector.stats() == {
        "scope": "device",
        "device": "device-1",
        "records": 5,
        "devices": 1,
        "by_model": {"fire-risk": {"3": 3, "4": 2}},
        "dropped": 4,
        "sampled_out": 0,
        "dead_lettered": 1,
        "counters": {"dropped": 4, "sampled_out": 0, "dead_lettered": 1},
    }
    mine = collector.stats(other)
    assert (mine["device"], mine["records"], mine["by_model"], mine["counters"]["lost"]) == ("device-2", 6, {"flood": {"1": 6}}, 7)
    assert collector.stats(admin, device="device-2") == mine


def test_stats_need_a_known_token(shared: RunningCollector) -> None:
    assert httpx.get(f"{shared.url}/v1/stats").status_code == 401
    response = httpx.get(f"{shared.url}/v1/stats", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert "not known" in response.json()["error"]


def test_healthz_needs_no_token(shared: RunningCollector) -> None:
    response = httpx.get(f"{shared.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_one_log_line_per_batch(shared: RunningCollector, device: tuple[str, str]) -> None:
    device_id, token = device
    documents = [batch(2), batch(3)]
    for document in documents:
        post(shared.url, token, document)
    post(shared.url, token, documents[0])
    lines = [line for line in shared.log().splitlines() if " batch " in line and f"from {device_id}:" in line]
    assert len(lines) == 3
    assert f"batch {documents[1]['batch_id']} from {device_id}: 3 records, 3 accepted, 0 duplicates" in lines[1]
    assert lines[2].endswith("2 records, 0 accepted, 2 duplicates")


def test_store_is_wal_with_unique_device_record_key(shared: RunningCollector) -> None:
    post(shared.url, shared.token, batch(1))
    with sqlite3.connect(shared.db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        key = [row[1] for row in connection.execute("PRAGMA table_info(records)") if row[5]]
        assert key == ["device", "id"]
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(
                "INSERT INTO records SELECT * FROM records LIMIT 1"
            )
    connection.close()
    assert SHA in {row["bundle_sha256"] for row in shared.records()}
