"""The buffer on real SQLite files: durability, identity, bounds, sampling, schema, faults."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import telemetry
from telemetry.buffer import _Job
from telemetry.store import APPLICATION_ID, SCHEMA_VERSION

from .records import SHA, integrity, record, seqs, stored

ROOT = Path(__file__).resolve().parents[2]


def test_recorded_records_are_stored_with_their_content_after_flush(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    before = time.time()
    with telemetry.Buffer(path) as buffer:
        for seq in range(10):
            record(buffer, seq)
        buffer.flush()
        assert buffer.pending() == 10
        rows = stored(path)
    assert [row["inputs"]["seq"] for row in rows] == list(range(10))
    first = rows[0]
    assert first["model"] == "fire-risk" and first["version"] == "3" and first["bundle_sha256"] == SHA
    assert first["inputs"] == {"seq": 0, "temp_c": 20.0}
    assert first["outputs"] == {"prediction": 0, "probabilities": {"0": 0.25, "1": 0.75}}
    assert first["flags"] == ["out_of_range:temp_c"] and rows[1]["flags"] == []
    assert before <= first["ts"] <= time.time()


def test_close_commits_what_was_recorded_and_reopening_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        for seq in range(25):
            record(buffer, seq)
        # no flush: leaving the block must commit
    assert seqs(path) == list(range(25))
    with pytest.raises(telemetry.BufferClosedError, match="closed"):
        record(buffer, 99)
    with telemetry.Buffer(path) as again:
        assert again.pending() == 25
        assert again.stats().recorded == 25


def test_the_writer_commits_groups_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_delay=0.01) as buffer:
        record(buffer, 1)
        deadline = time.monotonic() + 30
        while not stored(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seqs(path) == [1]


def test_recorded_input_is_a_copy_taken_at_record_time(tmp_path: Path) -> None:
    inputs = {"seq": 1, "temp_c": 20.0}
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        buffer.record(model="m", version="1", bundle_sha256=SHA, inputs=inputs, outputs={"prediction": 0}, flags=[])
        inputs["temp_c"] = 99.0  # the app reuses its dict
        buffer.flush()
    assert stored(tmp_path / "p.db")[0]["inputs"]["temp_c"] == 20.0


@pytest.mark.parametrize(("durability", "synchronous"), [("power", 2), ("process", 1)])
def test_durability_sets_wal_and_the_synchronous_level(tmp_path: Path, durability: str, synchronous: int) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, durability=durability) as buffer:
        record(buffer, 1)
        level = buffer._call(lambda store: store.db.execute("PRAGMA synchronous").fetchone()[0])
        mode = buffer._call(lambda store: store.db.execute("PRAGMA journal_mode").fetchone()[0])
    assert (level, mode) == (synchronous, "wal")  # FULL = 2 survives power loss; NORMAL = 1 only crashes
    assert seqs(path) == [1]


def test_each_record_gets_a_unique_ascending_uuid7_and_row_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=7) as buffer:
        for seq in range(50):
            record(buffer, seq)
        rows = buffer.oldest(100)
        assert buffer.acknowledge([row.rowid for row in rows]) == 50
    ids = [row.id for row in rows]
    assert len(set(ids)) == 50
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    assert ids == sorted(ids)  # in recording order, across groups of 7
    with telemetry.Buffer(path) as buffer:  # the table is empty now: a plain rowid would restart at 1
        record(buffer, 50)
        (new,) = buffer.oldest(10)
    assert new.rowid == max(row.rowid for row in rows) + 1
    assert new.id not in ids


def test_records_from_many_threads_are_each_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=64) as buffer:
        def work(offset: int) -> None:
            for seq in range(offset, offset + 400):
                record(buffer, seq)

        threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        buffer.flush()
    assert sorted(seqs(path)) == sorted(n * 1000 + i for n in range(4) for i in range(400))


def test_drop_oldest_keeps_the_newest_records_and_counts_the_rest_persistently(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, max_bytes=20_000, group_size=50) as buffer:
        for seq in range(1000):
            record(buffer, seq)
        stats = buffer.stats()
    kept = seqs(path)
    assert 0 < len(kept) < 1000
    assert kept == list(range(1000 - len(kept), 1000))  # a contiguous tail: the oldest went first
    assert stats.dropped == 1000 - len(kept) and stats.pending == len(kept) and stats.recorded == 1000
    assert 0 < stats.stored_bytes <= 20_000
    with telemetry.Buffer(path) as again:
        assert again.dropped() == stats.dropped


def test_drop_newest_keeps_the_oldest_records(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, max_bytes=20_000, when_full="drop_newest", group_size=50) as buffer:
        for seq in range(1000):
            record(buffer, seq)
        stats = buffer.stats()
    kept = seqs(path)
    assert 0 < len(kept) < 1000
    assert kept == list(range(len(kept)))  # the oldest, without holes
    assert stats.dropped == 1000 - len(kept)
    assert stats.stored_bytes <= 20_000
    with telemetry.Buffer(path, max_bytes=20_000, when_full="drop_newest") as buffer:
        record(buffer, 1000)  # still full: refused
        delivered = buffer.oldest(10)
        assert buffer.acknowledge([row.rowid for row in delivered]) == 10  # a delivery makes room
        for seq in range(1001, 1004):
            record(buffer, seq)
        assert buffer.dropped() == stats.dropped + 1
    assert seqs(path) == list(range(10, len(kept))) + [1001, 1002, 1003]


def test_the_file_stays_bounded_when_full(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    limit = 256 * 1024
    with telemetry.Buffer(path, max_bytes=limit, durability="process") as buffer:
        for seq in range(20_000):
            record(buffer, seq, note="x" * 200)
        buffer.flush()
        assert buffer.dropped() > 10_000
    size = path.stat().st_size
    assert size < 3 * limit, f"{size} bytes on disk for max_bytes={limit}"
    assert integrity(path) == "ok"


def test_sampling_keeps_a_fraction_decided_by_record_id_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, sample_rate=0.3) as buffer:
        for seq in range(2000):
            record(buffer, seq)
        stats = buffer.stats()
    rows = stored(path)
    assert 450 < len(rows) < 750  # binomial(2000, 0.3): mean 600, sd 20
    assert stats.sampled_out == 2000 - len(rows) and stats.recorded == 2000
    threshold = int(0.3 * 2**32)
    assert all(int(row["id"][-8:], 16) < threshold for row in rows)  # the rule is a function of the id's random bits
    with telemetry.Buffer(path) as again:
        assert again.sampled_out() == stats.sampled_out


def test_sample_rate_zero_keeps_nothing_but_counts_everything(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", sample_rate=0.0) as buffer:
        for seq in range(30):
            record(buffer, seq)
        assert (buffer.pending(), buffer.sampled_out()) == (0, 30)


def test_schema_version_is_recorded_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    telemetry.Buffer(path).close()
    connection = sqlite3.connect(str(path))
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(telemetry.BufferFormatError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade edgepack"):
        telemetry.Buffer(path)


def test_a_database_that_is_not_a_buffer_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "collector.db"
    connection = sqlite3.connect(str(other))
    connection.execute("CREATE TABLE devices (device TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(telemetry.BufferFormatError, match="not an edgepack telemetry buffer.*devices"):
        telemetry.Buffer(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(telemetry.BufferFormatError, match="not a usable SQLite database"):
        telemetry.Buffer(garbage)
    assert garbage.read_bytes() == b"this is not sqlite at all" * 100
    with pytest.raises(telemetry.BufferFormatError, match="does not exist"):
        telemetry.Buffer(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": 3}, "must be str"),
        ({"inputs": [1, 2, 3]}, "inputs and outputs must be mappings"),
        ({"outputs": 0.5}, "inputs and outputs must be mappings"),
        ({"flags": "out_of_range"}, "sequence of str"),
        ({"flags": 7}, "flags a sequence"),
    ],
)
def test_bad_record_arguments_raise_and_keep_what_was_accepted(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = tmp_path / "p.db"
    good = {"model": "m", "version": "1", "bundle_sha256": SHA, "inputs": {"seq": 0}, "outputs": {"prediction": 1}, "flags": []}
    with telemetry.Buffer(path) as buffer:
        buffer.record(**good)
        with pytest.raises(telemetry.RecordError, match=message) as caught:
            buffer.record(**{**good, **kwargs})
        assert isinstance(caught.value, TypeError)
        assert buffer.pending() == 1
    assert seqs(path) == [0]


def test_record_takes_keyword_arguments_only(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db") as buffer, pytest.raises(TypeError):
        buffer.record("m", "1", SHA, {}, {}, [])  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"durability": "disk"}, "durability='disk': expected 'power' or 'process'"),
        ({"when_full": "block"}, "when_full='block'"),
        ({"sample_rate": 1.5}, "between 0 and 1"),
        ({"max_bytes": 0}, "positive number of bytes"),
        ({"max_size": 10}, "unknown buffer option"),
    ],
)
def test_bad_options_are_refused_with_what_was_expected(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(telemetry.OptionsError, match=message):
        telemetry.Buffer(tmp_path / "p.db", **kwargs)


def test_a_full_disk_keeps_records_queued_and_stores_them_once_it_recovers(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, retry_delay=0.05) as buffer:
        record(buffer, 0)
        buffer.flush()
        pages = buffer._call(lambda store: store.db.execute("PRAGMA page_count").fetchone()[0])
        # A real SQLITE_FULL: the file may not grow past its current size.
        buffer._call(lambda store: store.db.execute(f"PRAGMA max_page_count = {pages}"))
        for seq in range(1, 400):
            record(buffer, seq, note="y" * 300)
        with pytest.raises(telemetry.StorageError, match="full"):
            buffer.flush(timeout=30)
        # Jobs queued behind the refused records fail too; "free the disk" by running the
        # fix ahead of them on the writer thread, as the next retry would see it.
        buffer._queue.appendleft(_Job(lambda store: store.db.execute("PRAGMA max_page_count = 1073741823")))
        buffer._wake.set()
        buffer.flush(timeout=30)
    assert seqs(path) == list(range(400))
    assert integrity(path) == "ok"


def test_flush_times_out_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        record(buffer, 0)
        buffer.flush()
        fd = os.open(f"{path}-lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a sync process does while it deletes
        try:
            record(buffer, 1)
            with pytest.raises(telemetry.FlushTimeout, match="not durable within 0.3 s"):
                buffer.flush(timeout=0.3)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        buffer.flush(timeout=30)
    assert seqs(path) == [0, 1]


def test_importing_and_using_telemetry_never_loads_pandas(tmp_path: Path) -> None:
    probe = (
        "import sys, json\n"
        "import telemetry\n"
        f"b = telemetry.Buffer({str(tmp_path / 'p.db')!r})\n"
        f"b.record(model='m', version='1', bundle_sha256={SHA!r}, inputs={{'x': 1.0}}, outputs={{'prediction': 1}}, flags=[])\n"
        "b.flush()\n"
        "s = telemetry.SyncService(b, 'http://127.0.0.1:9', token='t')\n"
        "b.close()\n"
        "print(json.dumps(['pandas' in sys.modules, 'sqlite_utils' in sys.modules, sys.modules.get('pandas', 0) is None]))\n"
        "import pandas\n"  # the mask is gone: an app can still import pandas afterwards
        "print(pandas.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[0]) == [False, True, False]
    assert lines[1] == "pandas"


def test_a_value_the_encoder_cannot_take_is_kept_as_text_and_the_writer_survives(tmp_path: Path) -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]  # deeper than the encoder (and a recursive normaliser) will go
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        record(buffer, 0, deep=deep)
        record(buffer, 1)
        buffer.flush()
    rows = stored(path)
    assert [row["inputs"]["seq"] for row in rows] == [0, 1]  # the record is kept; plain values as they were
    assert rows[0]["inputs"]["deep"] == "<unprintable list>"  # even str() gives up at this depth


def test_text_utf8_cannot_encode_is_kept_escaped_in_values_and_refused_in_names(tmp_path: Path) -> None:
    # A lone surrogate (what ``json.loads`` makes of "\\ud800", or a mis-decoded file
    # name) cannot be stored as UTF-8. In a value, an output or a flag the record is kept
    # with that text escaped; in an input name or the model's identity it is refused at
    # record() with a RecordError, and the writer goes on storing the other records.
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        record(buffer, 0, region="nor\ud800th")
        buffer.record(
            model="fire-risk", version="3", bundle_sha256=SHA, inputs={"seq": 1, "temp_c": 20.0},
            outputs={"prediction": "\udcff"}, flags=["odd:\ud800"],
        )
        for bad in ({"inputs": {"seq": 2, "re\ud800gion": 1.0}}, {"model": "fire\udfffrisk"}):
            arguments = {"model": "fire-risk", "version": "3", "bundle_sha256": SHA, "inputs": {"seq": 2}, "outputs": {}, "flags": [], **bad}
            with pytest.raises(telemetry.RecordError, match="UTF-8 can encode.*surrogate"):
                buffer.record(**arguments)
        record(buffer, 3)
        buffer.flush()
        assert buffer.pending() == 3
    rows = stored(path)
    assert [row["inputs"]["seq"] for row in rows] == [0, 1, 3]
    assert rows[0]["inputs"]["region"] == "nor\\ud800th"
    assert rows[1]["outputs"] == {"prediction": "\\udcff"} and rows[1]["flags"] == ["odd:\\ud800"]


def test_queued_records_are_not_tracked_by_the_garbage_collector(tmp_path: Path) -> None:
    # A queued record tracked by the cyclic GC is walked by every collection and ends in
    # the oldest generation, whose full collections then walk the whole queue: at a busy
    # recording loop's 100,000 queued records, most of a microsecond per record. After
    # one young collection, none of them may still be tracked (telemetry.encoding.pack_context).
    import gc

    with telemetry.Buffer(tmp_path / "p.db", group_delay=60) as buffer:
        for seq in range(2000):
            record(buffer, seq)
        gc.collect(0)
        queued = [item for item in list(buffer._queue) if type(item) is tuple]
        assert len(queued) == 2000  # the writer waits for its group_delay: all still queued
        assert not [item for item in queued if gc.is_tracked(item)]


def test_records_beyond_the_memory_queue_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    # A writer that never gets to commit on its own (long group delay, large groups).
    with telemetry.Buffer(path, max_queued=10, group_delay=3600) as buffer:
        for seq in range(25):
            record(buffer, seq)
        stats = buffer.stats()
    assert seqs(path) == list(range(10))
    assert (stats.dropped, stats.recorded, stats.pending) == (15, 25, 10)


def test_a_buffer_in_a_missing_directory_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(telemetry.StorageError, match="No such file or directory.*writable directory"):
        telemetry.Buffer(tmp_path / "missing" / "p.db")


def test_record_values_stores_the_same_record_as_record(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    names = ("seq", "temp_c", "region")
    with telemetry.Buffer(path) as buffer:
        buffer.record(model="m", version="1", bundle_sha256=SHA, inputs={"seq": 0, "temp_c": 21.5, "region": None},
                      outputs={"prediction": 1}, flags=["a"])
        buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=names, values=(1, 22.5, "north"),
                             outputs={"prediction": 0}, flags=[])
        with pytest.raises(telemetry.RecordError, match="tuples of the same length"):
            buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=names, values=(2, 1.0),
                                 outputs={"prediction": 0}, flags=[])
        with pytest.raises(telemetry.RecordError, match="tuples of the same length"):
            buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=list(names), values=(2, 1.0, "x"),
                                 outputs={"prediction": 0}, flags=[])
    rows = stored(path)
    assert [r["inputs"] for r in rows] == [{"seq": 0, "temp_c": 21.5, "region": None}, {"seq": 1, "temp_c": 22.5, "region": "north"}]
    assert [r["flags"] for r in rows] == [["a"], []]
    assert rows[0]["model"] == rows[1]["model"] == "m"


def test_a_hold_protects_rows_from_drop_oldest_until_released_or_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, max_bytes=6_000) as buffer:
        for seq in range(10):
            record(buffer, seq)
        rows = buffer.oldest(10)
        buffer.hold(rows[5].rowid, 60)  # rows 0-5 are "in flight"
        for seq in range(10, 40):
            record(buffer, seq, pad="p" * 100)
        buffer.flush()
        kept = seqs(path)
        assert kept[:6] == list(range(6)) and buffer.dropped() > 0  # newer rows were dropped instead
        # Acknowledging the first three while a later batch (3-5) is in flight keeps the hold...
        buffer.acknowledge([r.rowid for r in rows[:3]], keep_hold=True)
        for seq in range(40, 70):
            record(buffer, seq, pad="p" * 100)
        buffer.flush()
        assert seqs(path)[:3] == [3, 4, 5]
        # ...a plain acknowledgement ends it, and the oldest rows go first again.
        buffer.acknowledge([r.rowid for r in rows[3:4]])
        for seq in range(70, 100):
            record(buffer, seq, pad="p" * 100)
        buffer.flush()
        assert 4 not in seqs(path) and 5 not in seqs(path)
