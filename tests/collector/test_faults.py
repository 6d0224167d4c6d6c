"""Faults: a failing store, crashes, restarts, a gzip bomb at the default limits, bad startup."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from home import add_token
from tests.support.collector import ROOT, RunningCollector

from .batches import batch, post


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _zero_bomb(mebibytes: int) -> bytes:
    """A valid gzip stream of a JSON batch whose one input is ``mebibytes`` MiB of '0'."""
    document = batch(1)
    document["records"][0]["inputs"] = {"pad": "@@"}
    prefix, _, suffix = json.dumps(document).encode().partition(b"@@")
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"0" * (1 << 20)
    parts = [compressor.compress(prefix)]
    parts += [compressor.compress(zeros) for _ in range(mebibytes)]
    parts += [compressor.compress(suffix), compressor.flush()]
    return b"".join(parts)


def test_gzip_bomb_is_refused_with_bounded_memory(collector: RunningCollector) -> None:
    assert collector.process is not None
    bomb = _zero_bomb(128)
    assert len(bomb) < 1 << 20, "small as sent: only the decompression cap can stop it"
    peak_before = _peak_rss_kib(collector.process.pid)

    response = httpx.post(
        f"{collector.url}/v1/batches",
        content=bomb,
        headers={"Authorization": f"Bearer {collector.token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60.0,
    )

    assert response.status_code == 413
    assert "decompresses to more than 33554432 bytes" in response.json()["error"]
    growth_mib = (_peak_rss_kib(collector.process.pid) - peak_before) / 1024
    # Decompressing it all would take 128 MiB; the cap is 32 MiB.
    assert growth_mib < 48, f"peak memory grew by {growth_mib:.0f} MiB"
    assert collector.records() == []


def test_failing_store_answers_503_and_keeps_nothing_of_the_batch(collector: RunningCollector) -> None:
    document = batch(5, counters={"dropped": 3, "sampled_out": 0, "dead_lettered": 0})
    poison = document["records"][3]["id"]
    # A real SQLite failure in the middle of the batch: the 4th insert aborts.
    with sqlite3.connect(collector.db_path) as connection:
        connection.execute(
            f"CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.id = '{poison}' "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END"
        )
    connection.close()

    refused = post(collector.url, collector.token, document)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "simulated disk failure" in refused.json()["error"]
    assert "nothing was stored" in refused.json()["error"]
    assert collector.records() == []
    assert collector.devices() == {}

    with sqlite3.connect(collector.db_path) as connection:
        connection.execute("DROP TRIGGER poison")
    connection.close()
    retried = post(collector.url, collector.token, document)
    assert retried.json() == {"accepted": 5, "duplicates": 0}
    assert collector.devices()["device-1"]["dropped"] == 3


def test_restart_keeps_data_and_deduplication(collector: RunningCollector) -> None:
    document = batch(4, counters={"dropped": 2, "sampled_out": 1, "dead_lettered": 0})
    assert post(collector.url, collector.token, document).json() == {"accepted": 4, "duplicates": 0}
    stats = collector.stats()
    url = collector.url

    collector.restart()

    assert collector.url == url
    assert collector.stats() == stats
    assert post(collector.url, collector.token, document).json() == {"accepted": 0, "duplicates": 4}


def test_acknowledged_batch_survives_a_crash(collector: RunningCollector) -> None:
    document = batch(6)
    assert post(collector.url, collector.token, document).status_code == 200

    collector.kill()
    assert collector.process is not None and collector.process.returncode == -signal.SIGKILL
    collector.start()

    assert {row["id"] for row in collector.records()} == {r["id"] for r in document["records"]}
    assert post(collector.url, collector.token, document).json() == {"accepted": 0, "duplicates": 6}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_shuts_down_cleanly(collector: RunningCollector, stop_signal: signal.Signals) -> None:
    post(collector.url, collector.token, batch(2))
    assert collector.process is not None
    collector.process.send_signal(stop_signal)
    assert collector.process.wait(timeout=30) == 0
    log = collector.log()
    assert f"stopped on {stop_signal.name}" in log
    assert "store " in log and " closed" in log
    # The WAL was checkpointed on close: the main file alone holds the records.
    assert not Path(f"{collector.db_path}-wal").exists() or Path(f"{collector.db_path}-wal").stat().st_size == 0
    assert len(collector.records()) == 2


def test_a_broken_tokens_file_does_not_lock_devices_out(collector: RunningCollector) -> None:
    good = collector.tokens_path.read_text()
    collector.tokens_path.write_text("{ this is not json")

    response = post(collector.url, collector.token, batch(1))

    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert "keeping the previous tokens" in collector.log()
    # Once the file is good again, changes to it are picked up as before.
    collector.tokens_path.write_text(good)
    newcomer = collector.add_device("device-9")
    assert post(collector.url, newcomer, batch(1)).json() == {"accepted": 1, "duplicates": 0}


def _edgepack(*args: str, blocker: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{blocker}\nimport sys\nsys.argv = ['edgepack', *{list(args)!r}]\nfrom edgepack.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_missing_tokens_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["collector", "--db", str(tmp_path / "c.db"), "--tokens", str(tmp_path / "missing.json"), "--port", "0"])
    assert result.exit_code == 1
    assert "missing.json does not exist" in result.stderr
    assert "edgepack token add" in result.stderr


def test_unusable_db_path_is_a_clear_startup_error(tmp_path: Path) -> None:
    add_token(tmp_path / "tokens.json", "d1")
    db = tmp_path / "no" / "such" / "dir" / "c.db"
    result = CliRunner().invoke(cli, ["collector", "--db", str(db), "--tokens", str(tmp_path / "tokens.json"), "--port", "0"])
    assert result.exit_code == 1
    assert "opening the store" in result.stderr and "c.db" in result.stderr


def test_port_in_use_is_a_clear_error(collector: RunningCollector) -> None:
    result = _edgepack("collector", "--db", str(collector.db_path), "--tokens", str(collector.tokens_path), "--port", str(collector.port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{collector.port}" in result.stderr


def test_missing_extra_names_the_install_command(tmp_path: Path) -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    for args in (
        ("collector", "--db", str(tmp_path / "c.db"), "--tokens", str(tmp_path / "t.json")),
        ("token", "add", "d1", "--tokens", str(tmp_path / "t.json")),
    ):
        result = _edgepack(*args, blocker=blocker)
        assert result.returncode == 1, result.stderr
        assert "pip install 'edgepack[collector]'" in result.stderr
    assert not (tmp_path / "t.json").exists()


def _hold_write_lock(db_path: Path) -> sqlite3.Connection:
    """Another process's write transaction on the collector's file (a backup, an analyst)."""
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_store_locked_by_another_process_answers_503(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(lock_timeout=0.2)
    holder = _hold_write_lock(collector.db_path)
    try:
        document = batch(3)
        refused = post(collector.url, collector.token, document)
        # Reads still work while the file is locked for writing (WAL).
        assert collector.stats()["records"] == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "database is locked" in refused.json()["error"]
    assert collector.records() == []
    assert post(collector.url, collector.token, document).json() == {"accepted": 3, "duplicates": 0}


def test_too_many_batches_in_progress_answers_503(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(max_pending_batches=1, lock_timeout=120)
    documents = [batch(2), batch(2)]
    holder = _hold_write_lock(collector.db_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            futures = [pool.submit(post, collector.url, collector.token, document) for document in documents]
            # Whichever batch came second finds the one slot taken and is refused at once,
            # while the first waits on the lock.
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            busy = done.pop().result()
            assert busy.status_code == 503
            assert busy.headers["Retry-After"] == "5"
            assert "busy with 1 batches (at most 1)" in busy.json()["error"]
            # The other batch is still waiting on the lock in the writer thread, yet the
            # event loop answers: the store never blocks it.
            assert not all(future.done() for future in futures)
            assert httpx.get(f"{collector.url}/healthz", timeout=30).json() == {"status": "ok"}
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        answers = [future.result() for future in futures]
    assert sorted(answer.status_code for answer in answers) == [200, 503], [a.text for a in answers]
    stored = {row["id"] for row in collector.records()}
    accepted = documents[[answer.status_code for answer in answers].index(200)]
    assert stored == {r["id"] for r in accepted["records"]}


def _wait_for_log(collector: RunningCollector, text: str) -> None:
    for _ in range(1200):
        if text in collector.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the collector log:\n{collector.log()}")


def test_sigterm_lets_a_batch_in_progress_finish(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(max_pending_batches=1, lock_timeout=120)
    documents = [batch(3), batch(3)]
    holder = _hold_write_lock(collector.db_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            futures = [pool.submit(post, collector.url, collector.token, document) for document in documents]
            # The batch refused as busy proves the other one is in progress, waiting on the lock.
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            assert "busy" in done.pop().result().json()["error"]
            assert collector.process is not None
            collector.process.send_signal(signal.SIGTERM)
            _wait_for_log(collector, "Shutting down")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        answers = [future.result() for future in futures]
    finished = [i for i, answer in enumerate(answers) if answer.status_code == 200]
    assert len(finished) == 1, [answer.text for answer in answers]
    assert answers[finished[0]].json() == {"accepted": 3, "duplicates": 0}
    assert collector.process.wait(timeout=60) == 0
    assert {row["id"] for row in collector.records()} == {r["id"] for r in documents[finished[0]]["records"]}
