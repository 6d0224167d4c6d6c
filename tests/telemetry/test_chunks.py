"""Chunked storage: one row per commit group, record ids returned by record(), per-record
promises kept at chunk granularity, and the upgrade of schema 2 files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import telemetry
from telemetry import SyncOptions, SyncService
from telemetry.schema import SCHEMA_VERSION

from . import schema2
from .fake import FakeCollector
from .records import SHA, seqs, stored

ROOT = Path(__file__).resolve().parents[2]
URL = "http://collector.test"


def _record(buffer: telemetry.Buffer, seq: int, **extra: object) -> str | None:
    return buffer.record(
        model="fire-risk", version="3", bundle_sha256=SHA, inputs={"seq": seq, **extra},
        outputs={"prediction": seq % 2}, flags=[],
    )


def _chunks(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT id, count, gone FROM chunks ORDER BY id").fetchall()


def test_record_returns_the_id_the_record_is_stored_and_delivered_with(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        returned = [_record(buffer, seq) for seq in range(20)]
        values = buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=("a",), values=(1.0,),
                                      outputs={"prediction": 0}, flags=())
        fake = FakeCollector()
        SyncService(buffer, URL, token="t", client=fake.client(), sleep=lambda _: None).sync_once()
    assert all(isinstance(uid, str) and uuid.UUID(uid).version == 7 for uid in returned)
    assert returned == sorted(returned) and len(set(returned)) == 20
    assert list(fake.stored)[:20] == returned and list(fake.stored)[20] == values


def test_a_sampled_out_record_returns_none_and_is_counted(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", sample_rate=0.5) as buffer:
        returned = [_record(buffer, seq) for seq in range(400)]
        stats = buffer.stats()
        kept = buffer.oldest(1000)
    assert [r.id for r in kept] == [uid for uid in returned if uid is not None]
    assert stats.sampled_out == returned.count(None) and 100 < stats.sampled_out < 300 and stats.recorded == 400
    assert all(int(uid[-8:], 16) < 2**31 for uid in returned if uid is not None)


def test_a_commit_group_is_one_row_and_row_ids_stay_per_record(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=1000, group_delay=5) as buffer:
        for seq in range(1000):
            _record(buffer, seq)
        buffer.flush()
        rows = buffer.oldest(1000)
    assert _chunks(path) == [(1, 1000, 0)]
    assert [r.rowid for r in rows] == list(range(1, 1001))
    assert seqs(path) == list(range(1000))


def test_a_batch_ending_inside_a_chunk_leaves_the_rest_pending_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_delay=5) as buffer:
        for seq in range(100):
            _record(buffer, seq)
        first = buffer.oldest(30)
        assert buffer.acknowledge([r.rowid for r in first]) == 30
        stats = buffer.stats()
        assert stats.pending == 70 and stats.delivered == 30
    assert _chunks(path) == [(1, 100, 30)]
    with telemetry.Buffer(path) as buffer:
        assert [r.rowid for r in buffer.oldest(5)] == [31, 32, 33, 34, 35]
        # acknowledging records already gone counts nothing twice
        assert buffer.acknowledge([r.rowid for r in first]) == 0
        fake = FakeCollector()
        service = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=30),
                              sleep=lambda _: None)
        result = service.sync_once()
        assert result.sent == 70 and buffer.pending() == 0
    # Batches travel two at a time (SyncOptions.in_flight): they may arrive in either order.
    assert sorted(len(sent.body["records"]) for sent in fake.requests) == [10, 30, 30]
    assert sorted(r["inputs"]["seq"] for r in fake.stored.values()) == list(range(30, 100))
    assert _chunks(path) == []


def test_drop_oldest_gives_up_whole_chunks_and_counts_their_records(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, max_bytes=30_000, group_size=50) as buffer:
        for start in range(0, 1000, 50):
            for seq in range(start, start + 50):
                _record(buffer, seq, pad="x" * 20)
            buffer.flush()  # one chunk of 50 per flush
        stats = buffer.stats()
    chunks = _chunks(path)
    assert chunks and all(count == 50 and gone == 0 for _, count, gone in chunks)
    kept = seqs(path)
    assert kept == list(range(1000 - len(kept), 1000)) and len(kept) % 50 == 0
    assert stats.dropped == 1000 - len(kept) and 0 < stats.stored_bytes <= 30_000


def test_a_schema_2_buffer_is_upgraded_to_chunks_keeping_every_pending_record(tmp_path: Path) -> None:
    db = tmp_path / "predictions.db"
    source = schema2.rows(700)
    delivered = tuple(range(0, 40)) + (200, 201, 450)
    ids = schema2.write(db, source, delivered=delivered, poison_at=(333,))
    with telemetry.Buffer(db) as buffer:
        stats = buffer.stats()
        letters = buffer._call(lambda store: store.db.execute("SELECT uuid, reason FROM dead_letters").fetchall())
        pending = buffer.oldest(1000)
    assert (stats.recorded, stats.delivered, stats.dead_lettered) == (700, 43, 1)
    assert stats.pending == 700 - 43 - 1
    assert letters == [(ids[333], "payload unreadable in the upgrade from schema 2")]
    expected = [n for n in range(700) if n not in delivered and n != 333]
    assert [r.rowid for r in pending] == [n + 1 for n in expected]  # row ids kept
    after = stored(db)
    assert [row["id"] for row in after] == [ids[n] for n in expected]
    for row, n in zip(after, expected):
        want = source[n]
        assert (row["model"], row["inputs"], row["outputs"], row["flags"]) == (want["model"], want["inputs"], want["outputs"], want["flags"])
        assert row["ts"] == 1_700_000_000.0 + n
    chunks = _chunks(db)
    assert len(chunks) < 20  # runs of consecutive rows of one context, not one row per record
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'records'").fetchone()[0] == 0
    with telemetry.Buffer(db) as buffer:  # new records continue the row ids, never reuse one
        _record(buffer, 9999)
        assert buffer.oldest(1000)[-1].rowid == 701


def test_the_upgraded_schema_2_records_reach_the_collector_once(tmp_path: Path) -> None:
    db = tmp_path / "predictions.db"
    ids = schema2.write(db, schema2.rows(500), delivered=(10, 11))
    fake = FakeCollector()
    with telemetry.Buffer(db) as buffer:
        result = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=128),
                             sleep=lambda _: None).sync_once()
    assert result.stopped == "drained" and result.accepted == 498
    assert sorted(fake.stored) == sorted(ids[:10] + ids[12:])


def test_an_upgrade_from_schema_2_interrupted_by_a_crash_upgrades_later(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    schema2.write(db, schema2.rows(2000))
    probe = (
        "import os, telemetry.migration as m\n"
        "real = m._to_chunks\n"
        "def crash(conn, done, **kw):\n"
        "    real(conn, done, **kw)\n"
        "    os._exit(9)  # after building every chunk and dropping the old table, before the commit\n"
        "m._to_chunks = crash\n"
        "import telemetry\n"
        f"telemetry.Buffer({str(db)!r})\n"
    )
    died = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert died.returncode == 9
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2000
    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 2000 and buffer.dead_lettered() == 0


@pytest.mark.parametrize("field", ["ids", "ts", "payload"])
def test_a_chunk_whose_parts_disagree_is_dead_lettered_whole(tmp_path: Path, field: str) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        for seq in range(10):
            _record(buffer, seq)
        buffer.flush()
        for seq in range(10, 15):
            _record(buffer, seq)
        buffer.flush()
        damage = {"ids": "substr(ids, 37)", "ts": "substr(ts, 9)", "payload": "x'9a'"}[field]
        buffer._call(lambda store: store.db.execute(f"UPDATE chunks SET {field} = {damage} WHERE id = 1"))
        fake = FakeCollector()
        result = SyncService(buffer, URL, token="t", client=fake.client(), sleep=lambda _: None).sync_once()
        assert (result.sent, result.dead_lettered) == (5, 10) and buffer.pending() == 0
        letters = buffer._call(lambda store: store.db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
    assert letters == 10
    assert [r["inputs"]["seq"] for r in fake.stored.values()] == list(range(10, 15))


def test_a_damaged_schema_2_file_is_salvaged_into_chunks(tmp_path: Path) -> None:
    db = tmp_path / "predictions.db"
    ids = schema2.write(db, schema2.rows(3000))
    with sqlite3.connect(str(db)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        leaves = conn.execute("SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY pageno").fetchall()
    assert len(leaves) > 10
    fd = os.open(db, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x5a\xa5" * (page_size // 2), (leaves[len(leaves) // 2][0] - 1) * page_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    with telemetry.Buffer(db) as buffer:
        stats = buffer.stats()
        kept = buffer.oldest(3000)
    assert 0 < stats.lost < 100 and stats.pending == 3000 - stats.lost and stats.recorded == 3000
    assert [r.id for r in kept] == [uid for uid in ids if uid in {r.id for r in kept}]  # in order
    assert all(r.payload is not None for r in kept) and len({r.rowid for r in kept}) == len(kept)
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
