"""The sync service sends the bytes ``record()`` packed as they are stored (``PackedRecord``),
without decoding them: damage that keeps the MessagePack framing intact shows only when
the collector refuses the batch, and must then cost the damaged records alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

import telemetry
from telemetry import SyncOptions, SyncService
from telemetry.chunks import array_header, decode, split
from telemetry.encoding import PayloadError, pack
from telemetry.rows import PackedRecord
from tests.support.collector import RunningCollector

from .records import SHA, record, seqs


def _fill(path: Path, count: int, *, group: int) -> None:
    with telemetry.Buffer(path, group_size=group) as buffer:
        for seq in range(count):
            record(buffer, seq)
            if seq % group == group - 1:
                buffer.flush()  # one chunk per ``group`` records


def _damage(path: Path, chunk: int, index: int, damaged: bytes) -> None:
    """Put ``damaged`` in place of record ``index`` of the ``chunk``-th chunk (0-based)."""
    with sqlite3.connect(path) as conn:
        cid, count, ids, ts, payload = conn.execute(
            "SELECT id, count, ids, ts, payload FROM chunks ORDER BY id LIMIT 1 OFFSET ?", (chunk,)
        ).fetchone()
        _, _, records = decode(count, ids, ts, payload)
        packed = [pack(tuple(v), o, tuple(f)) for v, o, f in records]
        packed[index] = damaged
        conn.execute("UPDATE chunks SET payload = ? WHERE id = ?", (array_header(count) + b"".join(packed), cid))


def _one_value_short() -> bytes:
    # Framing intact, but 1 value for the context's 2 input names (seq, temp_c).
    return pack((1,), {"prediction": 1}, ())


def _bad_utf8() -> bytes:
    # Framing intact (a str of 2 bytes), but the bytes are not UTF-8.
    return b"\x93\x92\xa2\xff\xfe\xcb" + b"\x00" * 8 + b"\x80\x90"


def test_split_keeps_each_record_as_stored_and_checks_the_framing() -> None:
    records = [pack((i, 1.5), {"prediction": i}, ("f",) if i % 2 else ()) for i in range(20)]
    payload = array_header(20) + b"".join(records)
    ids = "".join(f"00000000-0000-7000-8000-{i:012d}" for i in range(20))
    ts = b"\x00" * 8 * 20
    uuids, stamps, raws = split(20, ids, ts, payload)
    assert [bytes(raw) for raw in raws] == records and len(uuids) == 20 and stamps == (0.0,) * 20
    with pytest.raises(PayloadError, match="unreadable"):
        split(20, ids, ts, payload[:-3])  # truncated: the last record's declared length is not there
    with pytest.raises(PayloadError, match="holds 20 records, expected 21"):
        split(21, ids + ids[:36], ts + ts[:8], payload)


def test_a_packed_record_decodes_on_demand_and_refuses_the_wrong_count_of_values() -> None:
    good = PackedRecord(1, "id", 0.0, "m", "1", "s", ("a", "b"), msgspec.Raw(pack((1, 2.5), {"p": 1}, ())))
    assert good.payload == ((1, 2.5), {"p": 1}, ())
    assert good._replace(input_names=("a",)).payload is None
    assert good._replace(packed=msgspec.Raw(_bad_utf8())).payload is None
    assert good._replace(packed=None).payload is None


@pytest.mark.parametrize("damaged", [_one_value_short(), _bad_utf8()], ids=["one value short", "not utf-8"])
@pytest.mark.parametrize("wire", ["packed", "json"])
def test_a_record_damaged_inside_its_framing_is_dead_lettered_alone(
    collector: RunningCollector, tmp_path: Path, damaged: bytes, wire: str
) -> None:
    db = tmp_path / "b.db"
    _fill(db, 60, group=20)
    _damage(db, chunk=1, index=7, damaged=damaged)  # record 27
    with telemetry.Buffer(db) as buffer:
        options = SyncOptions(batch_size=50, wire=wire)  # the damage sits in the first batch
        with SyncService(buffer, collector.url, token=collector.token, options=options) as service:
            result = service.sync_once()
        stats = buffer.stats()
    assert result.stopped == "drained" and result.dead_lettered == 1
    # Packed, the refused batch is sent again around the damaged record; as JSON the record
    # is found when the batch is read. Either way each other record is sent once.
    assert (result.sent, result.duplicates) == (59, 0)
    assert stats.pending == 0 and stats.delivered == 59 and stats.dead_lettered == 1
    stored = {r["inputs"]["seq"] for r in collector.records(collector.device_id)}
    assert stored == set(range(60)) - {27}


def test_a_batch_the_collector_refuses_for_other_reasons_is_still_dead_lettered_whole(
    collector: RunningCollector, tmp_path: Path
) -> None:
    # Every record decodes: the check finds nothing to take out, and the refusal stands.
    db = tmp_path / "b.db"
    with telemetry.Buffer(db) as buffer:
        for seq in range(5):
            buffer.record(model="m" * 300, version="1", bundle_sha256=SHA, inputs={"seq": seq}, outputs={"p": 1}, flags=[])
        buffer.flush()
        with SyncService(buffer, collector.url, token=collector.token) as service:
            result = service.sync_once()
        assert result.dead_lettered == 5 and buffer.stats().pending == 0
    assert seqs(db) == []
