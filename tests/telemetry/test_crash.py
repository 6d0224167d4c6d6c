"""Crash tests: SIGKILL the recording process and the sync process, then check the files.

Set ``EDGEPACK_LONG_CRASH=1`` for hundreds of kill points instead of the CI's 24.
"""

from __future__ import annotations

import collections
import os
import re
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import telemetry
from telemetry.crashpoint import ENV_VAR, POINTS
from tests.support.collector import RunningCollector, start_collector

from .records import integrity, record, seqs, stored

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("EDGEPACK_LONG_CRASH") == "1"
KILLS = 300 if LONG else 12


def run_and_kill(db: Path, first: int, durability: str, rng: random.Random) -> int | None:
    """Start a recorder, let it acknowledge a random amount, SIGKILL it; the last acked seq."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.telemetry.recorder", str(db), str(first), durability, str(rng.randrange(1 << 30))],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        seen = [child.stdout.readline() for _ in range(rng.randint(0, 8))]
        time.sleep(rng.random() * 0.02)  # land anywhere: inside record, a group commit, a flush
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()  # acknowledgements already written before the kill count too
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    acked = [line for line in [*seen, *rest.splitlines()] if line.strip().isdigit()]
    return int(acked[-1]) if acked else None


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["power", "process"])
def test_every_acknowledged_record_survives_sigkill_exactly_once(tmp_path: Path, durability: str) -> None:
    db = tmp_path / "p.db"
    rng = random.Random(f"crash-{durability}")
    acknowledged: set[int] = set()
    last_seen: int | None = None
    for round_number in range(KILLS):
        first = round_number * 1_000_000
        last = run_and_kill(db, first, durability, rng)
        if last is not None:
            acknowledged.update(range(first, last + 1))
            last_seen = last
    assert last_seen is not None, "no round got as far as a flush"
    assert integrity(db) == "ok"
    counts = collections.Counter(seqs(db))
    assert not [seq for seq, n in counts.items() if n > 1], "a record was stored twice"
    missing = sorted(acknowledged - set(counts))
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    with telemetry.Buffer(db) as buffer:  # the file still works as a buffer
        stats = buffer.stats()
        assert stats.pending == len(counts) and stats.recorded >= len(counts)
        ids = [row["id"] for row in stored(db)]
        assert len(ids) == len(set(ids))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    running = start_collector(Path(tmp_path_factory.mktemp("crash-collector")))
    yield running
    running.stop()


def sync_once(db: Path, home: RunningCollector, token_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepack", "sync", "--db", str(db), "--endpoint", home.url, "--token-file", str(token_file),
         "--once", "--batch-size", "100"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )


@pytest.mark.parametrize("point", POINTS)
def test_sync_killed_at_any_step_of_a_send_delivers_every_record_exactly_once(
    home: RunningCollector, tmp_path: Path, point: str
) -> None:
    device = f"device-{point}"
    token_file = tmp_path / "token"
    token_file.write_text(home.add_device(device))
    db = tmp_path / "p.db"
    with telemetry.Buffer(db) as buffer:
        for seq in range(250):
            record(buffer, seq)
    ids = {row["id"] for row in stored(db)}

    crashed = sync_once(db, home, token_file, **{ENV_VAR: point})

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(stored(db)) == 250  # nothing deleted locally: the delete never committed
    assert integrity(db) == "ok"

    resumed = sync_once(db, home, token_file)

    assert resumed.returncode == 0, resumed.stderr
    counts = re.search(r"accepted (\d+), duplicates (\d+)", resumed.stdout)
    assert counts, resumed.stdout
    accepted, duplicates = int(counts.group(1)), int(counts.group(2))
    assert accepted + duplicates == 250
    if point == "before_request":
        assert duplicates == 0
    else:
        # The first batch had arrived; the ones after it may have too: up to in_flight
        # batches travel while the first one's answer is read and its delete runs (the
        # batch read ahead is sent before that delete), and the kill lands before or after
        # the collector stores each, on connections of their own, so a later one may be
        # stored and an earlier one not. Either way those that arrived are now duplicates:
        # the first batch and whole batches among those after it, nothing more.
        in_flight = telemetry.SyncOptions().in_flight
        sizes = [min(100, 250 - first) for first in range(0, 250, 100)]  # 100, 100, 50
        later = sizes[1 : in_flight + 1]
        possible = {sizes[0] + sum(size for k, size in enumerate(later) if mask >> k & 1) for mask in range(1 << len(later))}
        assert duplicates in possible
    rows = home.records(device)
    assert len(rows) == 250 and {row["id"] for row in rows} == ids
    assert stored(db) == [] and integrity(db) == "ok"
    with telemetry.Buffer(db) as buffer:
        stats = buffer.stats()
    assert (stats.delivered, stats.pending) == (250, 0)


def test_recording_killed_repeatedly_while_a_sync_service_deletes_from_another_process(
    home: RunningCollector, tmp_path: Path
) -> None:
    device = "device-two-processes"
    token_file = tmp_path / "token"
    token_file.write_text(home.add_device(device))
    db = tmp_path / "p.db"
    telemetry.Buffer(db).close()
    service = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "sync", "--db", str(db), "--endpoint", home.url, "--token-file", str(token_file),
         "--interval", "0.02", "--batch-size", "50"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    rng = random.Random("two-processes")
    acknowledged: set[int] = set()
    try:
        for round_number in range(KILLS // 2):
            first = round_number * 1_000_000
            last = run_and_kill(db, first, rng.choice(["power", "process"]), rng)
            if last is not None:
                acknowledged.update(range(first, last + 1))
    finally:
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    sent_meanwhile = int(out.split("sent ")[1].split(" ")[0])
    assert sent_meanwhile > 0, "the service never sent while the recorder ran: no concurrency was tested"
    assert integrity(db) == "ok"
    drained = sync_once(db, home, token_file)
    assert drained.returncode == 0, drained.stderr
    at_home = collections.Counter(row["inputs"]["seq"] for row in home.records(device))
    assert not [seq for seq, n in at_home.items() if n > 1]
    missing = sorted(acknowledged - set(at_home))
    assert not missing, f"{len(missing)} acknowledged records never arrived, e.g. {missing[:5]}"
    assert stored(db) == [] and integrity(db) == "ok"
