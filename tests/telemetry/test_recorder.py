"""``Buffer.recorder``: a per-context push function, the runtime's way into the buffer."""

from __future__ import annotations

from pathlib import Path

import pytest

import telemetry
from telemetry.ledger import Ledger

from .records import SHA, stored

NAMES = ("seq", "temp_c", "region")


def test_a_recorder_stores_what_record_stores_and_returns_ascending_ids(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
        first = buffer.record(model="m", version="1", bundle_sha256=SHA, inputs={"seq": 0, "temp_c": 21.5, "region": None},
                              outputs={"prediction": 1, "probabilities": {0: 0.25, 1: 0.75}}, flags=["a"])
        ids = [push((seq, 20.0 + seq, "north"), {"prediction": seq % 2, "probabilities": {0: 0.5, 1: 0.5}}, ()) for seq in range(1, 200)]
        other = buffer.recorder(model="m", version="2", bundle_sha256=SHA, names=NAMES)
        last = other((200, None, "south"), {"prediction": 0}, ["out_of_range:temp_c"])
        buffer.flush()
        assert buffer.pending() == 201
    everything = [first, *ids, last]
    assert all(type(i) is str for i in everything) and everything == sorted(everything)
    rows = stored(path)
    assert [r["id"] for r in rows] == everything
    assert rows[0]["inputs"] == {"seq": 0, "temp_c": 21.5, "region": None} and rows[0]["flags"] == ["a"]
    assert rows[5]["inputs"] == {"seq": 5, "temp_c": 25.0, "region": "north"}
    assert rows[5]["outputs"] == {"prediction": 1, "probabilities": {0: 0.5, 1: 0.5}}
    assert [r["version"] for r in rows] == ["1"] * 200 + ["2"]
    assert rows[-1]["flags"] == ["out_of_range:temp_c"] and rows[-1]["inputs"]["temp_c"] is None


def test_a_recorder_checks_its_context_once_and_each_record_s_shape(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        with pytest.raises(telemetry.RecordError, match="must be str"):
            buffer.recorder(model="m", version=1, bundle_sha256=SHA, names=NAMES)  # type: ignore[arg-type]
        with pytest.raises(telemetry.RecordError, match="names as a list"):
            buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=list(NAMES))  # type: ignore[arg-type]
        push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
        with pytest.raises(telemetry.RecordError, match="3 names and 2 values"):
            push((1, 2.0), {"prediction": 0}, ())
        with pytest.raises(telemetry.RecordError, match="a list values"):
            push([1, 2.0, "x"], {"prediction": 0}, ())  # type: ignore[arg-type]
        with pytest.raises(telemetry.RecordError, match="single str"):
            push((1, 2.0, "x"), {"prediction": 0}, "flag")
        with pytest.raises(telemetry.RecordError, match="outputs is a list"):
            push((1, 2.0, "x"), [0], ())  # type: ignore[arg-type]
        assert buffer.pending() == 0
    with pytest.raises(telemetry.BufferClosedError):
        push((1, 2.0, "x"), {"prediction": 0}, ())
    with pytest.raises(telemetry.BufferClosedError):
        buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)


def test_a_recorder_samples_and_counts_like_record(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", sample_rate=0.5) as buffer:
        push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
        kept = [push((i, 1.0, "x"), {"prediction": 0}, ()) for i in range(2000)]
        stats = buffer.stats()
    assert stats.pending == sum(1 for k in kept if k is not None)
    assert stats.sampled_out == sum(1 for k in kept if k is None)
    assert 800 < stats.sampled_out < 1200 and stats.recorded == 2000


def test_the_ledger_holds_the_file_s_totals_after_each_kind_of_commit(tmp_path: Path) -> None:
    # Commits hand the ledger the totals they computed instead of reading them back: they
    # must be the file's own, with drops (both policies), sampling and deliveries.
    for when_full in ("drop_oldest", "drop_newest"):
        path = tmp_path / f"{when_full}.db"
        with telemetry.Buffer(path, max_bytes=40_000, when_full=when_full, sample_rate=0.9, group_size=50) as buffer:
            push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
            for i in range(600):
                push((i, float(i), "north" * 4), {"prediction": i % 2}, ())
                if i % 200 == 199:
                    buffer.flush()
                    oldest = buffer.oldest(30)
                    buffer.acknowledge([r.rowid for r in oldest])
            counters = buffer.stats()
        ledger = Ledger(path)
        try:
            kept = ledger.read()
        finally:
            ledger.close()
        assert kept is not None
        totals = kept[1]
        assert totals["recorded"] == counters.recorded == 600
        assert totals["dropped"] == counters.dropped > 0
        assert totals["sampled_out"] == counters.sampled_out > 0
        assert totals["delivered"] == counters.delivered > 0
        assert counters.pending == 600 - counters.dropped - counters.sampled_out - counters.delivered


def test_the_lock_kept_across_back_to_back_commits_is_given_up_once_the_writer_caught_up(tmp_path: Path) -> None:
    import fcntl
    import os

    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=20) as buffer:
        push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
        kept = []
        for i in range(3000):  # far more than one commit takes: the writer is behind
            push((i, 1.0, "x"), {"prediction": 0}, ())
        buffer.flush()
        fd = os.open(f"{path}-lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still kept
            kept.append(True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        assert kept == [True]
        # And the counters the kept-lock commits carried forward are the file's.
        stats = buffer.stats()
        assert stats.pending == stats.recorded == 3000 and stats.stored_bytes > 0
    assert [r["inputs"]["seq"] for r in stored(path)] == list(range(3000))


def _payloads(path: Path) -> list[bytes]:
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("SELECT payload FROM chunks ORDER BY id")]
    finally:
        connection.close()


class _Duck:
    """A value msgspec refuses but ``pack`` normalises (numpy-like: ``tolist``)."""

    def tolist(self) -> float:
        return 2.5


def test_records_of_a_recorder_make_the_same_chunk_bytes_as_record_values(tmp_path: Path) -> None:
    rows = [((i, 20.0 + i / 7, "north" if i % 3 else None), {"prediction": i % 2, "probabilities": {0: 0.25, 1: 0.75}},
             ["out_of_range:temp_c"] if i % 5 == 0 else []) for i in range(300)]
    payloads = {}
    for kind in ("at_once", "by_writer", "mixed"):
        path = tmp_path / f"{kind}.db"
        # One group: nothing is committed before close(), so every file holds one chunk.
        with telemetry.Buffer(path, group_size=1000, group_delay=30) as buffer:
            push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
            for i, (values, outputs, flags) in enumerate(rows):
                if kind == "at_once" or (kind == "mixed" and i % 2):
                    buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=NAMES, values=values,
                                         outputs=outputs, flags=flags)
                else:
                    push(values, outputs, flags)
        payloads[kind] = _payloads(path)
        assert [(r["inputs"]["seq"], r["flags"]) for r in stored(path)] == [(i, flags) for i, (_, _, flags) in enumerate(rows)]
    assert len(payloads["at_once"]) == 1
    assert payloads["by_writer"] == payloads["at_once"] == payloads["mixed"]


def test_a_recorder_copies_the_flags_and_keeps_values_msgspec_refuses(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path) as buffer:
        push = buffer.recorder(model="m", version="1", bundle_sha256=SHA, names=NAMES)
        flags = ["unseen_category:region"]
        push((1, 2.0, "x"), {"prediction": 1}, flags)
        flags.append("changed later")
        push((2, _Duck(), "y"), {"prediction": 0}, [])
    rows = stored(path)
    assert rows[0]["flags"] == ["unseen_category:region"]
    assert rows[1]["inputs"] == {"seq": 2, "temp_c": 2.5, "region": "y"}
