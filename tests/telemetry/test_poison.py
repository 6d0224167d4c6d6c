"""Hostile or damaged payloads: bounded decoding, dead letters, and the schema 1 upgrade."""

from __future__ import annotations

import marshal
import os
import sqlite3
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import telemetry
from telemetry import SyncOptions, SyncService
from telemetry.encoding import PayloadError, unpack, unpack_names
from telemetry.legacy import LegacyFormatError, read_marshal
from telemetry.schema import SCHEMA_VERSION
from tests.support.collector import RunningCollector

from . import schema1
from .records import record, stored

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = {
    "marshal tuple of 2**31-1": schema1.POISON,
    "msgpack array32 of 2**31-1": b"\xdd\x7f\xff\xff\xff",
    "msgpack map32 of 2**31-1": b"\xdf\x7f\xff\xff\xff",
    "msgpack str32 of 2 GiB": b"\x93\xdb\x7f\xff\xff\xff",
    "msgpack nested 100k deep": b"\x93" + b"\x91" * 100_000 + b"\xc0",
    "empty": b"",
}


@pytest.mark.parametrize("blob", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_payload_is_refused_without_allocating_what_it_declares(blob: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(PayloadError, match="unreadable"):
            unpack(("a", "b"), blob)
        with pytest.raises(PayloadError):
            unpack_names(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # what the blob holds, not the 16 GiB it declares


def _inject(path: Path, payloads: list[bytes]) -> None:
    """Chunks of one record with these raw payloads, appended the way a damaged write
    would leave them (a valid array header in front of the bad record)."""
    conn = sqlite3.connect(str(path))
    with conn:
        context = conn.execute("SELECT min(id) FROM contexts").fetchone()[0]
        for n, payload in enumerate(payloads):
            (sequence,) = conn.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone()
            conn.execute(
                "INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES (?, ?, 1, ?, ?, ?, ?)",
                (sequence, context, f"00000000-0000-7000-8000-{n:012d}", struct.pack("<d", 1.0), b"\x91" + payload,
                 len(payload) + 96),
            )
            conn.execute("UPDATE counters SET value = value + 1 WHERE name IN ('sequence', 'recorded')")
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'stored_bytes'", (len(payload) + 96,))
    conn.close()


def test_sync_dead_letters_poisoned_records_and_delivers_all_the_others(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with telemetry.Buffer(db, group_size=500) as buffer:
        for seq in range(1500):
            record(buffer, seq)
    _inject(db, [schema1.POISON, HOSTILE["msgpack array32 of 2**31-1"]])
    with telemetry.Buffer(db) as buffer:
        for seq in range(1500, 3000):
            record(buffer, seq)
    token_file = tmp_path / "token"
    token_file.write_text(collector.token)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "edgepack", "sync", "--db", str(db), "--endpoint", collector.url, "--token-file", str(token_file), "--once"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MemoryError" not in done.stderr
    assert collector.stats()["records"] == 3000
    with telemetry.Buffer(db) as buffer:
        stats = buffer.stats()
    assert stats.pending == 0 and stats.delivered == 3000 and stats.dead_lettered == 2
    assert collector.stats()["dead_lettered"] == 2  # the count travels home with the next batches


def test_a_schema_1_buffer_is_upgraded_keeping_every_pending_record(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    source = schema1.rows(400)
    ids = schema1.write(db, source, poison_at=(7, 300))
    with telemetry.Buffer(db) as buffer:
        stats = buffer.stats()
        assert stats.pending == 398 and stats.dead_lettered == 2 and stats.recorded == 400
        kept = buffer._call(lambda store: store.db.execute("SELECT uuid, reason FROM dead_letters ORDER BY id").fetchall())
    assert [uid for uid, _ in kept] == [ids[7], ids[300]]
    assert all("unreadable in the upgrade from schema 1" in reason for _, reason in kept)
    after = stored(db)
    expected = [(uid, row) for n, (uid, row) in enumerate(zip(ids, source)) if n not in (7, 300)]
    assert [row["id"] for row in after] == [uid for uid, _ in expected]
    for row, (_, want) in zip(after, expected):
        assert row["inputs"] == want["inputs"] and row["outputs"] == want["outputs"] and row["flags"] == want["flags"]
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_the_upgraded_records_reach_the_collector_with_their_ids(tmp_path: Path, collector: RunningCollector) -> None:
    db = tmp_path / "p.db"
    ids = schema1.write(db, schema1.rows(250), poison_at=(3,))
    with telemetry.Buffer(db) as buffer, SyncService(buffer, collector.url, token=collector.token, options=SyncOptions(batch_size=100)) as sync:
        result = sync.sync_once()
    assert result.stopped == "drained" and result.accepted == 249
    assert sorted(row["id"] for row in collector.records()) == sorted(ids[:3] + ids[4:])


def test_the_upgrade_never_hands_old_bytes_to_marshal_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "p.db"
    schema1.write(db, schema1.rows(50), poison_at=(10,))

    def refuse(*_: object) -> None:
        raise AssertionError("marshal.loads called on stored bytes")

    monkeypatch.setattr(marshal, "loads", refuse)
    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 49 and buffer.dead_lettered() == 1


def test_an_upgrade_interrupted_by_a_crash_leaves_a_schema_1_file_that_upgrades_later(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    schema1.write(db, schema1.rows(3000))
    probe = (
        "import os, sys, telemetry.migration as m\n"
        "real = m._from_marshal\n"
        "def crash(conn, done):\n"
        "    real(conn, done)\n"
        "    os._exit(9)  # after converting every row, before the commit\n"
        "m._from_marshal = crash\n"
        "import telemetry\n"
        f"telemetry.Buffer({str(db)!r})\n"
    )
    died = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert died.returncode == 9
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 3000 and buffer.dead_lettered() == 0


# -- the bounded marshal reader -----------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
    | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.sampled_from([2, 4]))
def test_the_bounded_reader_reads_what_marshal_wrote(value: object, version: int) -> None:
    assert read_marshal(marshal.dumps(value, version)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_the_bounded_reader_refuses_garbage_cleanly(blob: bytes) -> None:
    try:
        read_marshal(blob)
    except LegacyFormatError:
        pass


@pytest.mark.parametrize("blob", [schema1.POISON, b"[\xff\xff\xff\x7f", b"u\xff\xff\xff\x7f", b"l\xff\xff\xff\x7f", b"c\x00", b")\x05N"])
def test_the_bounded_reader_refuses_declared_lengths_beyond_the_blob_and_foreign_types(blob: bytes) -> None:
    with pytest.raises(LegacyFormatError):
        read_marshal(blob)
