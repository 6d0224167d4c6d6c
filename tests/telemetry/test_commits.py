"""How the writer turns queued records into commits, and how record() hands them over."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import telemetry
from telemetry.ids import IdClock
from telemetry.rows import Run
from telemetry.store import Store
from telemetry.writer import _Job

from .records import SHA, seqs, stored


def _record(buffer: telemetry.Buffer, seq: int, **extra: object) -> str | None:
    return buffer.record(
        model="fire-risk", version="3", bundle_sha256=SHA, inputs={"seq": seq, **extra},
        outputs={"prediction": seq % 2}, flags=[],
    )


def _chunks(path: Path) -> list[tuple[int, int]]:
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT id, count FROM chunks ORDER BY id").fetchall()
    finally:
        connection.close()


def _counted_commits(monkeypatch: pytest.MonkeyPatch, measure: Callable[[Run], int] = lambda run: len(run.ids)) -> list[int]:
    """What every commit from now on stores, in order: its records (or ``measure`` summed over its runs)."""
    commits: list[int] = []
    insert = Store.insert

    def counted(self: Store, runs, **kwargs):  # type: ignore[no-untyped-def]
        commits.append(sum(measure(run) for run in runs))
        return insert(self, runs, **kwargs)

    monkeypatch.setattr(Store, "insert", counted)
    return commits


def _wait_for_a_commit(commits: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not commits and time.monotonic() < deadline:
        time.sleep(0.02)


def test_records_queued_faster_than_a_commit_are_stored_as_several_chunks_in_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit costs the writer a dozen GIL hand-offs: when records queue up behind one,
    # the next commit takes them all (still one chunk per group_size records).
    commits = _counted_commits(monkeypatch)
    path = tmp_path / "p.db"
    gate = threading.Event()
    with telemetry.Buffer(path, group_size=10, max_bytes=None) as buffer:
        buffer._queue.append(_Job(lambda store: gate.wait(30)))  # the writer is busy for now
        buffer._wake.set()
        returned = [_record(buffer, seq) for seq in range(95)]
        gate.set()
        buffer.flush()
        stats = buffer.stats()
    assert commits == [95]
    assert _chunks(path) == [(1 + 10 * i, 10) for i in range(9)] + [(91, 5)]
    assert seqs(path) == list(range(95)) and [r["id"] for r in stored(path)] == returned
    assert stats.recorded == 95 and stats.pending == 95


def test_records_recorded_within_group_delay_are_one_commit_even_past_a_full_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit costs the recording thread far more than a record: a full chunk alone does
    # not start one; group_delay (or a commit's worth of chunks) does.
    commits = _counted_commits(monkeypatch)
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=10, group_delay=2.0, max_bytes=None) as buffer:
        for seq in range(12):
            _record(buffer, seq)
        time.sleep(0.3)  # time enough for a commit of the first full chunk, if one started
        for seq in range(12, 35):
            _record(buffer, seq)
        _wait_for_a_commit(commits, 10)  # group_delay commits them, not flush()
        buffer.flush()
    assert commits == [35]
    assert _chunks(path) == [(1, 10), (11, 10), (21, 10), (31, 5)]
    assert seqs(path) == list(range(35))


def test_a_commits_worth_of_queued_records_is_committed_without_waiting_for_group_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = _counted_commits(monkeypatch)
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=10, group_delay=600.0, max_bytes=None) as buffer:
        worth = buffer._commit_records
        assert worth > 10  # several chunks
        for seq in range(worth):
            _record(buffer, seq)
        _wait_for_a_commit(commits, 30)
        committed = list(commits)
    assert committed == [worth]
    assert seqs(path) == list(range(worth))


def test_a_commit_of_several_chunks_stays_within_a_quarter_of_max_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = _counted_commits(monkeypatch, lambda run: run.size)
    path = tmp_path / "p.db"
    gate = threading.Event()
    limit = 200_000
    with telemetry.Buffer(path, group_size=20, max_bytes=limit) as buffer:
        buffer._queue.append(_Job(lambda store: gate.wait(30)))
        buffer._wake.set()
        for seq in range(2000):
            _record(buffer, seq, note="z" * 200)
        gate.set()
        buffer.flush()
        stats = buffer.stats()
    chunk_bytes = max(commits[:1])  # the first commit: one chunk, before the writer knows the size
    assert len(commits) > 4 and all(size <= max(limit // 4, chunk_bytes) for size in commits)
    assert stats.recorded == 2000 and stats.dropped + stats.pending == 2000 and stats.stored_bytes <= limit
    assert all(count <= 20 for _, count in _chunks(path))


def test_record_refuses_bad_context_arguments_after_good_ones(tmp_path: Path) -> None:
    # The context of consecutive records is checked once and then compared by identity:
    # a bad argument after good records must still be refused, naming what was wrong.
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        _record(buffer, 0)
        with pytest.raises(telemetry.RecordError, match="model, version and bundle_sha256 must be str, got int"):
            buffer.record(model=3, version="3", bundle_sha256=SHA, inputs={"seq": 1}, outputs={}, flags=[])  # type: ignore[arg-type]

        class Name(str):
            pass

        with pytest.raises(telemetry.RecordError, match="got Name"):
            buffer.record(model=Name("fire-risk"), version="3", bundle_sha256=SHA, inputs={"seq": 1}, outputs={}, flags=[])
        names = ("seq",)
        assert buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=names, values=(1,), outputs={}, flags=[])
        with pytest.raises(telemetry.RecordError, match="same length"):
            buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=names, values=(1, 2), outputs={}, flags=[])
        with pytest.raises(telemetry.RecordError, match="names as a list"):
            buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=["seq"], values=(1,), outputs={}, flags=[])  # type: ignore[arg-type]
        with pytest.raises(telemetry.RecordError, match="single str"):
            buffer.record_values(model="m", version="1", bundle_sha256=SHA, names=names, values=(1,), outputs={}, flags="x")
        assert buffer.pending() == 2


def test_equal_contexts_in_other_objects_share_one_chunk_and_flags_are_taken_at_record_time(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_delay=5) as buffer:
        flags = ["a"]
        for seq in range(6):
            # new str objects each time: equal contexts, not identical ones
            buffer.record(model="".join(["fire", "-risk"]), version=str(3), bundle_sha256="".join([SHA]),
                          inputs={f"s{'eq'}": seq}, outputs={"prediction": 1}, flags=flags)
        flags.append("changed later")
        buffer.flush()
    assert [count for _, count in _chunks(path)] == [6]
    assert [r["flags"] for r in stored(path)] == [["a"]] * 6


def test_ids_from_threads_recording_at_once_are_unique_and_ascend_per_thread() -> None:
    clock = IdClock()
    made: list[list[str]] = [[] for _ in range(4)]

    def take(out: list[str]) -> None:
        import time

        for _ in range(20_000):
            out.append(clock.next(time.time()))

    threads = [threading.Thread(target=take, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [uid for out in made for uid in out]
    assert len(set(every)) == 80_000 and len({uid[:18] for uid in every}) == 80_000  # millisecond and counter alone
    for out in made:
        assert out == sorted(out)
    for uid in every[::997]:
        parsed = uuid.UUID(uid)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == uid


def test_a_slow_recorder_gets_ids_of_its_own_millisecond() -> None:
    clock = IdClock()
    base = 1_796_000_000.0
    ids = [clock.next(base + i * 0.0015) for i in range(50)]  # one record every 1.5 ms
    assert [uuid.UUID(uid).int >> 80 for uid in ids] == [int((base + i * 0.0015) * 1000) for i in range(50)]
    assert ids == sorted(ids) and {uid[15:18] for uid in ids} == {"000"}  # each the first of its millisecond


def test_a_small_queue_hurries_the_writer_at_half_of_max_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Waiting for a commit's worth would let a small max_queued fill (and drop records)
    # before the writer starts.
    commits = _counted_commits(monkeypatch)
    path = tmp_path / "p.db"
    with telemetry.Buffer(path, group_size=10, group_delay=600.0, max_queued=60, max_bytes=None) as buffer:
        assert buffer._commit_records > 30
        for seq in range(30):
            _record(buffer, seq)
        _wait_for_a_commit(commits, 30)
        committed = list(commits)
        stats = buffer.stats()
    assert committed == [30]
    assert stats.lost == 0 and seqs(path) == list(range(30))
