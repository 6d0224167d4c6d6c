"""Damaged pages and lost WAL files: found, salvaged, counted, reported home."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest

import telemetry
from telemetry import SyncOptions, SyncService
from tests.support.collector import RunningCollector

from .fake import FakeCollector, error
from .records import record, seqs, stored

ROOT = Path(__file__).resolve().parents[2]
URL = "http://collector.test"


def _damage_record_pages(path: Path, count: int = 2) -> int:
    """Overwrite ``count`` leaf pages of the chunks table, from the middle of the file,
    with garbage; returns how many pending records the chunks on them held (each chunk
    read alone afterwards: those on a damaged page fail, the others do not)."""
    conn = sqlite3.connect(str(path))
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = conn.execute("SELECT pageno, ncell FROM dbstat WHERE name = 'chunks' AND pagetype = 'leaf' ORDER BY pageno").fetchall()
        pending = conn.execute("SELECT id, count - gone FROM chunks ORDER BY id").fetchall()
    finally:
        conn.close()
    assert len(leaves) > 10
    middle = len(leaves) // 2
    chosen = leaves[middle : middle + count]
    fd = os.open(path, os.O_WRONLY)
    try:
        for pageno, _ in chosen:
            os.pwrite(fd, bytes([0x5A, 0xA5]) * (page_size // 2), (pageno - 1) * page_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    lost = 0
    try:
        for cid, records in pending:
            try:
                conn.execute("SELECT ids, ts, payload FROM chunks WHERE id = ?", (cid,)).fetchall()
            except sqlite3.DatabaseError:
                lost += records
    finally:
        conn.close()
    assert 0 < lost < sum(records for _, records in pending)
    return lost


def _filled(path: Path, count: int) -> None:
    # Chunks of 10 records: a few per page, so one damaged page costs a few chunks, not
    # most of the file (a chunk of 1,000 records spans overflow pages of its own).
    with telemetry.Buffer(path, group_size=10) as buffer:
        for seq in range(count):
            record(buffer, seq)
    # Closing checkpointed the WAL: every page is in the main file now.
    assert not (path.parent / f"{path.name}-wal").exists() or (path.parent / f"{path.name}-wal").stat().st_size == 0


def _service(buffer: telemetry.Buffer, fake: FakeCollector) -> SyncService:
    return SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=500), sleep=lambda _: None)


def test_a_damaged_page_found_at_open_is_moved_aside_salvaged_and_its_loss_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.db"
    _filled(path, 5000)
    lost = _damage_record_pages(path)
    with caplog.at_level(logging.ERROR, logger="telemetry.buffer"), telemetry.Buffer(path) as buffer:
        stats = buffer.stats()
        assert stats.lost == lost and stats.pending == 5000 - lost and stats.recorded == 5000
        record(buffer, 5000)
        fake = FakeCollector()
        result = _service(buffer, fake).sync_once()
        assert result.stopped == "drained" and buffer.pending() == 0
    assert any("was damaged" in r.message and f"{lost} lost" in r.message for r in caplog.records)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("p.db.corrupt-")]
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], "the damaged file is kept for inspection"
    assert len(fake.stored) == 5001 - lost
    assert all(sent.body["counters"]["lost"] == lost for sent in fake.requests)


def test_a_collector_that_refuses_the_lost_counter_gets_it_inside_dropped(tmp_path: Path) -> None:
    # Collectors older than the 'lost' counter answer 422 on "counters": the batch is sent
    # again, the lost records counted inside 'dropped', and nothing is dead-lettered.
    path = tmp_path / "p.db"
    _filled(path, 3000)
    lost = _damage_record_pages(path)

    def old_collector(body: dict) -> httpx.Response | None:
        if "lost" in body["counters"]:
            return error(422, "counters: unexpected key 'lost'; expected ['dropped', 'sampled_out', 'dead_lettered']")
        return None

    fake = FakeCollector(rule=old_collector)
    with telemetry.Buffer(path) as buffer:
        result = _service(buffer, fake).sync_once()
        assert result.stopped == "drained" and result.dead_lettered == 0 and buffer.pending() == 0
    assert len(fake.stored) == 3000 - lost
    assert fake.requests[-1].body["counters"]["dropped"] == lost and "lost" not in fake.requests[-1].body["counters"]


def test_damage_found_by_a_later_read_is_salvaged_and_recording_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=10) as buffer:
        for seq in range(5000):
            record(buffer, seq)
        buffer.flush()
        buffer._call(lambda store: store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        lost = _damage_record_pages(path)
        buffer._call(lambda store: store.db.execute("PRAGMA shrink_memory"))  # forget cached pages
        assert buffer.pending() == 5000 - lost  # was: "database disk image is malformed", forever
        for seq in range(5000, 5100):
            record(buffer, seq)
        buffer.flush()
        stats = buffer.stats()
    assert stats.pending == 5100 - lost and stats.lost == lost
    kept = seqs(path)
    assert kept == sorted(kept) and kept[-100:] == list(range(5000, 5100))
    assert len(set(row["id"] for row in stored(path))) == len(kept)


def test_the_lost_count_reaches_the_collector_as_its_own_counter(tmp_path: Path, collector: RunningCollector) -> None:
    path = tmp_path / "p.db"
    _filled(path, 3000)
    lost = _damage_record_pages(path)
    with telemetry.Buffer(path) as buffer, SyncService(buffer, collector.url, token=collector.token) as sync:
        result = sync.sync_once()
        assert result.stopped == "drained" and result.dead_lettered == 0 and result.accepted == 3000 - lost
    home = collector.stats()
    assert home["counters"]["lost"] == lost and home["dropped"] == 0


def _record_then_die(path: Path, count: int) -> None:
    """A child records ``count`` records, flushes (acknowledged) and dies before any checkpoint."""
    probe = (
        "import os, telemetry\n"
        f"buffer = telemetry.Buffer({str(path)!r}, group_size=500)\n"
        f"for seq in range({count}):\n"
        "    buffer.record(model='fire-risk', version='3', bundle_sha256='ab' * 32, inputs={'seq': seq}, outputs={'prediction': 0}, flags=[])\n"
        "buffer.flush()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, timeout=120)


@pytest.mark.parametrize("fate", ["deleted", "garbled"])
def test_a_lost_wal_with_acknowledged_records_is_detected_counted_and_reported(
    tmp_path: Path, fate: str, collector: RunningCollector, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.db"
    _record_then_die(path, 2500)
    wal = tmp_path / "p.db-wal"
    assert wal.stat().st_size > 0  # the records live only in the WAL
    if fate == "deleted":
        wal.unlink()
        (tmp_path / "p.db-shm").unlink()
    else:
        fd = os.open(wal, os.O_WRONLY)
        os.pwrite(fd, os.urandom(32), 0)  # the header: SQLite then ignores every frame
        os.close(fd)
    with caplog.at_level(logging.ERROR, logger="telemetry.buffer"), telemetry.Buffer(path) as buffer:
        stats = buffer.stats()
        assert stats.lost == 2500 and stats.pending == 0 and stats.recorded == 2500
        record(buffer, 1)  # the app goes on; its next batch carries the count home
        with SyncService(buffer, collector.url, token=collector.token) as sync:
            assert sync.sync_once().accepted == 1
    assert any("behind its ledger" in r.message and "2500 pending record(s) lost" in r.message for r in caplog.records)
    home = collector.stats()
    assert home["counters"]["lost"] == 2500 and home["dropped"] == 0
    with telemetry.Buffer(path) as buffer:  # counted once, not again at every open
        assert buffer.stats().lost == 2500


def test_a_collector_that_takes_the_lost_counter_gets_it_by_name(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    _record_then_die(path, 300)
    (tmp_path / "p.db-wal").unlink()
    with telemetry.Buffer(path) as buffer:
        record(buffer, 1)
        fake = FakeCollector()
        _service(buffer, fake).sync_once()
    assert [sent.body["counters"] for sent in fake.requests] == [{"dropped": 0, "sampled_out": 0, "dead_lettered": 0, "lost": 300}]


def test_a_healthy_buffer_sends_no_lost_counter(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        record(buffer, 1)
        fake = FakeCollector()
        _service(buffer, fake).sync_once()
    assert [sorted(sent.body["counters"]) for sent in fake.requests] == [["dead_lettered", "dropped", "sampled_out"]]


def test_a_second_connection_follows_the_salvage_instead_of_salvaging_again(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    _filled(path, 5000)
    app = telemetry.Buffer(path)
    sync = telemetry.Buffer(path, create=False)  # what `edgepack sync` opens, in its own process
    try:
        lost = _damage_record_pages(path)
        for buffer in (app, sync):
            buffer._call(lambda store: store.db.execute("PRAGMA shrink_memory"))
        assert app.pending() == 5000 - lost  # the app salvages
        batch = sync.oldest(100)  # read from the old, moved-aside file: still the same records
        assert sync.acknowledge([record.rowid for record in batch]) == 100  # lands in the fresh file
        assert app.pending() == 4900 - lost and sync.pending() == 4900 - lost
        record(app, 5000)
        app.flush()
        assert sync.pending() == 4901 - lost
    finally:
        sync.close()
        app.close()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("p.db.corrupt-") and p.name[-4:] not in ("-wal", "-shm")]) == 1
    assert seqs(path)[:1] == [100]


@pytest.mark.parametrize("end", ["closed", "crashed"])
def test_a_ledger_left_behind_by_a_deleted_buffer_is_rewritten_not_counted_as_lost(
    tmp_path: Path, end: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Deleting predictions.db (and its -wal, -shm) to start afresh, leaving the -ledger:
    # the new, empty buffer is another file, not the old one with its WAL lost.
    path = tmp_path / "p.db"
    if end == "closed":
        _filled(path, 400)
    else:
        _record_then_die(path, 400)
    assert (tmp_path / "p.db-ledger").stat().st_size > 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="telemetry.buffer"), telemetry.Buffer(path) as buffer:
        stats = buffer.stats()
        assert stats.lost == 0 and stats.recorded == 0 and stats.pending == 0
        record(buffer, 1)
        fake = FakeCollector()
        result = _service(buffer, fake).sync_once()
        assert result.stopped == "drained" and result.accepted == 1
    assert [sent.body["counters"] for sent in fake.requests] == [{"dropped": 0, "sampled_out": 0, "dead_lettered": 0}]
    stale = [r for r in caplog.records if "belongs to another buffer file" in r.message]
    assert len(stale) == 1 and stale[0].levelno == logging.WARNING
    assert "p.db-ledger" in stale[0].message and str(path) in stale[0].message
    assert not any("behind its ledger" in r.message for r in caplog.records)
    # The ledger now names the new file: losing its WAL is caught again.
    caplog.clear()
    _record_then_die(path, 200)
    (tmp_path / "p.db-wal").unlink()
    (tmp_path / "p.db-shm").unlink()
    with telemetry.Buffer(path) as buffer:
        assert buffer.stats().lost == 200 and buffer.stats().recorded == 201


def test_a_lost_wal_right_after_the_file_was_created_is_still_caught(tmp_path: Path) -> None:
    # A new file's schema and identity would live only in the WAL until a checkpoint;
    # losing it then would leave a main file that looks brand new, like a deleted buffer.
    # The identity is checkpointed into the main file before the ledger names it.
    path = tmp_path / "p.db"
    _record_then_die(path, 50)
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)  # the main file alone, WAL ignored
    try:
        assert conn.execute("SELECT value FROM counters WHERE name = 'identity'").fetchone()[0] > 0
    finally:
        conn.close()
    (tmp_path / "p.db-wal").unlink()
    (tmp_path / "p.db-shm").unlink()
    with telemetry.Buffer(path) as buffer:
        assert buffer.stats().lost == 50


def test_a_version_1_ledger_without_an_identity_is_still_compared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A device upgraded from an edgepack whose ledger holds no identity keeps its lost-WAL check.
    from telemetry import ledger

    path = tmp_path / "p.db"
    _record_then_die(path, 700)
    file = tmp_path / "p.db-ledger"
    raw = file.read_bytes()
    _, _, _identity, *values = ledger._FORMATS[2].unpack(raw[: ledger._FORMATS[2].size])
    old = ledger._FORMATS[1].pack(b"EPKL", 1, *values)
    file.write_bytes(old + ledger._CRC.pack(zlib.crc32(old)))
    assert file.stat().st_size == 60
    (tmp_path / "p.db-wal").unlink()
    (tmp_path / "p.db-shm").unlink()
    with caplog.at_level(logging.ERROR, logger="telemetry.buffer"), telemetry.Buffer(path) as buffer:
        assert buffer.stats().lost == 700
    assert any("behind its ledger" in r.message and "700 pending record(s) lost" in r.message for r in caplog.records)
    assert file.stat().st_size == 68  # rewritten as version 2, with the file's identity
