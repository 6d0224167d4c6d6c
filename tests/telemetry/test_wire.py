"""The wire format end to end: the MessagePack batch and JSON store the same bytes at a
real collector, a replay in the other format is all duplicates, and a device talking to
a collector that predates the packed format or zstd steps down and keeps syncing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

import telemetry
from telemetry import SyncOptions, SyncService
from telemetry.wire import PACKED_MEDIA_TYPE, Wire
from tests.support.collector import RunningCollector

from .records import SHA

# Values whose JSON takes some care: integer-keyed probabilities (keys become text), NaN and
# infinities (null, as the device's JSON always sent them), -0.0, 64-bit edges, nesting,
# text beyond ASCII, a context that changes in the middle of the records (two groups).
TRICKY: list[dict[str, Any]] = [
    {"temp_c": 31.5, "region": "Zürich ✓", "count": 2**64 - 1, "low": -(2**63), "ok": True, "none": None},
    {"temp_c": math.nan, "region": "north", "count": 0, "low": -0.0, "ok": False, "none": None},
    {"temp_c": math.inf, "region": "", "count": 1, "low": 1e-300, "ok": True, "none": None},
    {"temp_c": [1, 2.5, "x", None], "region": {"b": 1, "a": [True]}, "count": 3, "low": -math.inf, "ok": False, "none": 1},
]


def _fill(path: Path, count: int = 40) -> None:
    with telemetry.Buffer(path) as buffer:
        for i in range(count):
            inputs = TRICKY[i % len(TRICKY)]
            buffer.record(
                model="fire-risk" if i < count // 2 else "fire-risk-v2", version="3", bundle_sha256=SHA, inputs=inputs,
                outputs={"prediction": i % 2, "probabilities": {0: 0.25, 1: 0.75, 10: math.nan}},
                flags=["out_of_range:temp_c"] if i % 3 == 0 else [],
            )


def _copy(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-ledger"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def _sync(path: Path, collector: RunningCollector, token: str, *, client: httpx.Client | None = None,
          **options: Any) -> telemetry.SyncResult:
    with telemetry.Buffer(path) as buffer, SyncService(
        buffer, collector.url, token=token, client=client, options=SyncOptions(batch_size=7, **options),
        sleep=lambda s: None,
    ) as service:
        result = service.sync_once()
        assert buffer.pending() == 0
    return result


def _raw_rows(collector: RunningCollector, device: str) -> dict[str, tuple[Any, ...]]:
    keys = ("ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags")
    return {row["id"]: tuple(row[k] for k in keys) for row in collector.rows("records", "WHERE device = ?", (device,))}


@pytest.mark.parametrize("variant", [{"wire": "packed"}, {"wire": "packed", "zstd": False}, {"wire": "packed", "zstd": False, "gzip": False}])
def test_packed_and_json_store_the_same_bytes_and_a_replay_in_the_other_format_is_all_duplicates(
    collector: RunningCollector, tmp_path: Path, variant: dict[str, Any]
) -> None:
    original, twin, replay = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    _fill(original)
    _copy(original, twin)
    _copy(original, replay)
    other = "twin-device"
    other_token = collector.add_device(other)

    packed = _sync(original, collector, collector.token, **variant)
    as_json = _sync(twin, collector, other_token, wire="json")
    assert (packed.accepted, packed.duplicates) == (40, 0)
    assert (as_json.accepted, as_json.duplicates) == (40, 0)
    # Byte for byte the same stored text, whichever format carried the records.
    stored_packed, stored_json = _raw_rows(collector, collector.device_id), _raw_rows(collector, other)
    assert len(stored_packed) == 40 and stored_packed == stored_json
    sample = next(iter(stored_packed.values()))
    assert '"0":0.25' in sample[5] and '"10":null' in sample[5]  # integer keys as text, NaN as null

    # The same records again from the first device, in the other format: nothing new.
    again = _sync(replay, collector, collector.token, wire="json")
    assert (again.accepted, again.duplicates) == (0, 40)
    assert _raw_rows(collector, collector.device_id) == stored_packed


def _old_collector(real: httpx.Client, *, knows_zstd: bool, knows_packed: bool, seen: list[httpx.Request]) -> httpx.Client:
    """A client whose requests reach the real collector only as a collector from before the
    packed format (and zstd) would let them: with its exact 415 answers otherwise."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        encoding = request.headers.get("content-encoding", "identity")
        if encoding == "zstd" and not knows_zstd:
            return httpx.Response(415, json={"error": "Content-Encoding 'zstd' is not supported; send identity (no header) or gzip"})
        kind = request.headers.get("content-type", "")
        if kind == PACKED_MEDIA_TYPE and not knows_packed:
            return httpx.Response(415, json={"error": f"Content-Type {kind!r} is not supported; send application/json"})
        answer = real.send(real.build_request(request.method, request.url, headers=request.headers, content=request.read()))
        return httpx.Response(answer.status_code, headers={"content-type": "application/json"}, content=answer.content)

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("in_flight", [1, 2])
@pytest.mark.parametrize("knows_zstd", [False, True])
def test_a_device_steps_down_to_what_an_older_collector_takes_and_keeps_syncing(
    collector: RunningCollector, tmp_path: Path, knows_zstd: bool, in_flight: int
) -> None:
    path = tmp_path / "p.db"
    _fill(path)
    seen: list[httpx.Request] = []
    with httpx.Client() as real:
        client = _old_collector(real, knows_zstd=knows_zstd, knows_packed=False, seen=seen)
        result = _sync(path, collector, collector.token, client=client, in_flight=in_flight)
    assert result.stopped == "drained" and (result.accepted, result.duplicates, result.dead_lettered) == (40, 0, 0)
    assert len(collector.records(collector.device_id)) == 40
    kinds = [(r.headers.get("content-type"), r.headers.get("content-encoding")) for r in seen]
    # Refused once for each thing the old collector does not know, then JSON for good. With
    # two batches in flight, the second was on its way before the first refusal came back:
    # it is refused too, and sent again as the service sends by then (stepping down once).
    ahead = [(PACKED_MEDIA_TYPE, "zstd")] * (in_flight - 1)
    if knows_zstd:
        assert kinds == [(PACKED_MEDIA_TYPE, "zstd"), *ahead] + [("application/json", "zstd")] * 6  # 40 records, 7 a batch
    else:
        assert kinds == [(PACKED_MEDIA_TYPE, "zstd"), *ahead, (PACKED_MEDIA_TYPE, "gzip")] + [("application/json", "gzip")] * 6


def test_a_415_naming_nothing_steps_down_one_thing_at_a_time() -> None:
    wire = Wire(SyncOptions())
    assert (wire.media_type, wire.encoding) == (PACKED_MEDIA_TYPE, "zstd")
    steps = []
    while wire.step_down("unsupported"):
        steps.append((wire.media_type, wire.encoding))
    assert steps == [(PACKED_MEDIA_TYPE, "gzip"), ("application/json", "gzip"), ("application/json", "identity")]
    named = Wire(SyncOptions())
    assert named.step_down("Content-Type 'x' is not supported") and (named.media_type, named.encoding) == ("application/json", "zstd")
    assert named.step_down("Content-Encoding 'zstd' is not supported") and named.encoding == "gzip"
    assert not Wire(SyncOptions(wire="json", zstd=False, gzip=False)).step_down("Content-Type")


def test_a_same_id_record_with_other_content_is_a_duplicate_and_the_first_content_stays(
    collector: RunningCollector, tmp_path: Path
) -> None:
    import sqlite3

    path, changed = tmp_path / "a.db", tmp_path / "b.db"
    _fill(path, 8)
    _copy(path, changed)
    # The same ids with other values: rewrite the copy's chunks (same ids, new payloads).
    from telemetry.chunks import decode, encode_payload
    from telemetry.encoding import pack

    with sqlite3.connect(changed) as conn:
        for cid, count, ids, ts, payload in conn.execute("SELECT id, count, ids, ts, payload FROM chunks").fetchall():
            _, _, records = decode(count, ids, ts, payload)
            new = encode_payload([pack(tuple(99.0 for _ in values), outputs, tuple(flags)) for values, outputs, flags in records])
            conn.execute("UPDATE chunks SET payload = ? WHERE id = ?", (new, cid))
    first = _sync(path, collector, collector.token, wire="json")
    before = _raw_rows(collector, collector.device_id)
    second = _sync(changed, collector, collector.token)  # packed
    assert (first.accepted, second.accepted, second.duplicates) == (8, 0, 8)
    assert _raw_rows(collector, collector.device_id) == before


def test_cli_sync_takes_the_wire_format(collector: RunningCollector, tmp_path: Path) -> None:
    from .test_sync_e2e import edgepack, sync_args

    packed_db, json_db = tmp_path / "a.db", tmp_path / "b.db"
    _fill(packed_db, 10)
    _copy(packed_db, json_db)
    token_file = tmp_path / "token"
    token_file.write_text(collector.token)
    done = edgepack(*sync_args(packed_db, collector, token_file, "--once"))
    assert done.returncode == 0, done.stderr
    again = edgepack(*sync_args(json_db, collector, token_file, "--once", "--wire", "json"))
    assert again.returncode == 0 and "drained: sent 10 records" in again.stdout, again.stdout + again.stderr
    assert "10 duplicates" in again.stderr and len(collector.records(collector.device_id)) == 10
    refused = edgepack(*sync_args(json_db, collector, token_file, "--once", "--wire", "xml"))
    assert refused.returncode != 0 and "'packed'" in refused.stderr
