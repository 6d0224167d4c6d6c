"""End to end against a real collector on a loopback port: the CLI, restarts, two processes."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import telemetry
from telemetry import SyncOptions, SyncService
from tests.support.collector import RunningCollector

from .records import integrity, record, stored

ROOT = Path(__file__).resolve().parents[2]


def edgepack(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepack", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )


def sync_args(db: Path, collector: RunningCollector, token_file: Path, *extra: str) -> list[str]:
    return ["sync", "--db", str(db), "--endpoint", collector.url, "--token-file", str(token_file), *extra]


def test_cli_sync_once_delivers_exactly_the_buffered_records_and_the_drop_count(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with telemetry.Buffer(db, max_bytes=40_000, group_size=100) as buffer:
        for seq in range(600):
            record(buffer, seq)
        stats = buffer.stats()
    assert stats.dropped > 0  # the bound was hit: the gap must show at home
    expected = {row["id"]: row for row in stored(db)}
    token_file = tmp_path / "token"
    token_file.write_text(f"  {collector.token}\n")

    done = edgepack(*sync_args(db, collector, token_file, "--once", "--batch-size", "100", "--gzip-level", "6"))

    assert done.returncode == 0, done.stderr
    assert f"drained: sent {len(expected)} records" in done.stdout
    assert done.stderr.count(" records sent, ") == -(-len(expected) // 100)  # a log line per batch
    home = collector.stats()
    assert home["records"] == len(expected) and home["by_model"] == {"fire-risk": {"3": len(expected)}}
    assert home["dropped"] == stats.dropped
    rows = collector.records(collector.device_id)
    assert sorted(row["id"] for row in rows) == sorted(expected)
    sample = next(row for row in rows if row["id"] == next(iter(expected)))
    assert sample["inputs"] == expected[sample["id"]]["inputs"]
    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 0 and buffer.stats().delivered == len(expected)

    again = edgepack(*sync_args(db, collector, token_file, "--once"))  # nothing left: nothing sent
    assert again.returncode == 0 and "drained: sent 0 records" in again.stdout
    assert collector.stats()["records"] == len(expected)


def test_cli_reports_a_refused_token_and_keeps_the_records(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with telemetry.Buffer(db) as buffer:
        for seq in range(5):
            record(buffer, seq)
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token\n")
    done = edgepack(*sync_args(db, collector, token_file, "--once"))
    assert done.returncode == 3, done.stderr
    assert "refused this device's token (401" in done.stderr and "--token-file" in done.stderr
    assert len(stored(db)) == 5 and collector.stats()["records"] == 0


def test_cli_usage_errors_name_what_is_wrong(collector: RunningCollector, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("")
    db = tmp_path / "p.db"
    telemetry.Buffer(db).close()
    empty = edgepack(*sync_args(db, collector, token_file, "--once"))
    assert empty.returncode == 2 and "is empty" in empty.stderr
    token_file.write_text(collector.token)
    missing = edgepack(*sync_args(tmp_path / "nope.db", collector, token_file, "--once"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr  # --once: a typo must not pass
    assert not (tmp_path / "nope.db").exists()
    bad_url = edgepack("sync", "--db", str(db), "--endpoint", "collector:8787", "--token-file", str(token_file), "--once")
    assert bad_url.returncode == 2 and "expected an http:// or https:// URL" in bad_url.stderr


def test_a_collector_restarted_and_killed_mid_stream_still_gets_every_record_once(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    reports: list[telemetry.BatchReport] = []
    outages: list[str] = []

    def on_batch(report: telemetry.BatchReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            collector.stop()  # clean restart begins: the next request finds nobody
            outages.append("stopped")
        elif len(reports) == 4:
            collector.kill()  # a crash this time
            outages.append("killed")

    def sleep(delay: float) -> None:
        if not collector.running:
            collector.start()  # back on the same port with the same files

    with telemetry.Buffer(db) as buffer:
        for seq in range(700):
            record(buffer, seq)
        buffer.flush()
        ids = {row["id"] for row in stored(db)}
        sync = SyncService(buffer, collector.url, token=collector.token, options=SyncOptions(batch_size=100, backoff_base=0.01),
                           sleep=sleep, on_batch=on_batch)
        result = sync.sync_once()
        assert buffer.pending() == 0
    assert outages == ["stopped", "killed"]
    assert result.stopped == "drained" and result.retries >= 2 and result.sent == 700
    rows = collector.records(collector.device_id)
    assert len(rows) == 700 and {row["id"] for row in rows} == ids
    assert collector.stats()["records"] == 700


def test_the_sync_service_runs_beside_a_recording_app_and_stops_cleanly_on_sigterm(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    token_file = tmp_path / "token"
    token_file.write_text(collector.token)
    with telemetry.Buffer(db, group_delay=0.005, group_size=50) as buffer:
        record(buffer, 0)
        buffer.flush()
        service = subprocess.Popen(
            [sys.executable, "-m", "edgepack", *sync_args(db, collector, token_file, "--interval", "0.05", "--batch-size", "40")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            # The app keeps recording in this process while the service deletes in its own.
            for seq in range(1, 1500):
                record(buffer, seq)
                if seq % 100 == 0:
                    time.sleep(0.01)
            buffer.flush()
            deadline = time.monotonic() + 60
            while collector.stats()["records"] < 1500 and time.monotonic() < deadline:
                time.sleep(0.1)
            service.send_signal(signal.SIGTERM)
            out, err = service.communicate(timeout=60)
        finally:
            if service.poll() is None:
                service.kill()
        assert service.returncode == 0, err
        assert out.startswith("stop_requested: sent 1500 records")
        stats = buffer.stats()
    assert collector.stats()["records"] == 1500
    assert sorted(row["inputs"]["seq"] for row in collector.records(collector.device_id)) == list(range(1500))
    assert (stats.recorded, stats.delivered, stats.pending) == (1500, 1500, 0)
    assert integrity(db) == "ok"


def test_cli_help_lists_sync_options() -> None:
    done = edgepack("sync", "--help")
    assert done.returncode == 0
    for option in ("--db", "--endpoint", "--token-file", "--once", "--interval", "--gzip-level"):
        assert option in done.stdout


def test_cli_once_shows_a_progress_bar_only_on_a_terminal(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with telemetry.Buffer(db) as buffer:
        for seq in range(300):
            record(buffer, seq)
    token_file = tmp_path / "token"
    token_file.write_text(collector.token)
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "edgepack", *sync_args(db, collector, token_file, "--once", "--batch-size", "50")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal, text=True,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and "drained: sent 300 records" in out
    screen = shown.decode("utf-8", "replace")
    assert "syncing" in screen and "100%" in screen
    assert " records sent, " not in screen  # per-batch log lines give way to the bar
    assert collector.stats()["records"] == 300


def test_the_service_waits_for_a_buffer_the_app_has_not_created_yet(collector: RunningCollector, tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    token_file = tmp_path / "token"
    token_file.write_text(collector.token)
    service = subprocess.Popen(
        [sys.executable, "-m", "edgepack", *sync_args(db, collector, token_file, "--interval", "0.05")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert service.stderr is not None
        waiting = service.stderr.readline()
        assert "does not exist yet; waiting" in waiting
        with telemetry.Buffer(db) as buffer:  # the app starts after the sync service
            for seq in range(30):
                record(buffer, seq)
        deadline = time.monotonic() + 60
        while collector.stats()["records"] < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, err
    assert collector.stats()["records"] == 30 and stored(db) == []
