"""``edgepack collector --workers N``: N uvicorn worker processes on one port, on either
store. On SQLite they take the file's write lock in turn; on PostgreSQL they share the
server. Either way a record is stored once, whichever worker takes its batch, and a
worker killed in the middle of a batch loses nothing a device was told is stored."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import telemetry
from telemetry import SyncOptions, SyncService
from tests.support.collector import RunningCollector

from .batches import batch, post


def _alive(pid: int) -> bool:
    # A killed worker stays a zombie until the supervisor reaps it: that counts as gone.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _worker_pids(collector: RunningCollector, count: int, *, gone: int | None = None) -> set[int]:
    """The pids of the live workers that have opened their store (each logs it), once
    ``count`` have (and ``gone`` is not among them)."""
    deadline = time.monotonic() + 30
    while True:
        opened = {int(line.split()[0]) for line in collector.log().splitlines() if " store " in line and " open;" in line}
        alive = set(filter(_alive, opened))
        if len(alive) >= count and gone not in alive:
            return alive
        assert time.monotonic() < deadline, collector.log()[-3000:]
        time.sleep(0.1)


def test_workers_share_one_socket_and_one_store(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(workers=2)
    tokens = [collector.token] + [collector.add_device(f"device-{n}") for n in range(2, 5)]
    documents = [(tokens[n % 4], batch(100)) for n in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda item: post(collector.url, item[0], item[1]).json(), documents))
    assert answers == [{"accepted": 100, "duplicates": 0}] * 40
    # Replayed through whichever worker takes the connection: nothing twice.
    with ThreadPoolExecutor(8) as pool:
        replays = list(pool.map(lambda item: post(collector.url, item[0], item[1]).json(), documents))
    assert replays == [{"accepted": 0, "duplicates": 100}] * 40
    admin = collector.add_admin()
    assert collector.stats(admin)["records"] == 4000
    assert {name: device["batches"] for name, device in collector.devices().items()} == {
        "device-1": 20, "device-2": 20, "device-3": 20, "device-4": 20,
    }
    assert len(_worker_pids(collector, 2)) == 2  # two worker processes opened the store
    assert collector.stop() == 0  # SIGTERM stops the workers and exits 0


def test_a_worker_killed_mid_upload_loses_nothing_and_is_replaced(collector_factory: Callable[..., RunningCollector], tmp_path: Path) -> None:
    collector = collector_factory(workers=2)
    workers = sorted(_worker_pids(collector, 2))
    count = 8000
    with telemetry.Buffer(tmp_path / "device.db") as buffer:
        for seq in range(count):
            buffer.record(
                model="fire-risk", version="1", bundle_sha256="ab" * 32,
                inputs={"temp_c": seq / 10, "region": "north"}, outputs={"prediction": seq % 2}, flags=[],
            )
        buffer.flush()
        killed: list[int] = []

        def kill_one(report: object) -> None:
            # After the first acknowledged batch, kill -9 one worker while the next batches
            # are on their way or being stored (two are in flight).
            if not killed:
                killed.append(workers[0])
                threading.Timer(0.005, os.kill, (workers[0], signal.SIGKILL)).start()

        options = SyncOptions(batch_size=200, in_flight=2, backoff_base=0.01, backoff_cap=0.05, max_attempts=50)
        rounds = 0
        while buffer.pending() and rounds < 20:
            rounds += 1
            with SyncService(buffer, collector.url, token=collector.token, on_batch=kill_one, options=options) as sync:
                sync.sync_once()
        assert buffer.pending() == 0, f"records left on the device after {rounds} rounds"
    assert killed == [workers[0]]
    rows = collector.records("device-1")
    assert len(rows) == count and len({row["id"] for row in rows}) == count
    assert sorted(row["inputs"]["temp_c"] for row in rows) == sorted(seq / 10 for seq in range(count))
    # The supervisor started a worker in place of the one killed, and it serves.
    replaced = _worker_pids(collector, 2, gone=workers[0])
    assert workers[0] not in replaced and workers[1] in replaced
    assert "died" in collector.log()
    assert post(collector.url, collector.token, batch(10)).json() == {"accepted": 10, "duplicates": 0}
    assert collector.stop() == 0
