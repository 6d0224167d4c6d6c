"""Shared fixture: a real collector on a loopback port.

``collector`` (function scope) starts ``edgepack collector`` in a subprocess on a free
127.0.0.1 port, with a fresh SQLite file and tokens file in ``tmp_path``, waits until
``GET /healthz`` answers, and yields a ``RunningCollector``:

- ``url`` (``http://127.0.0.1:PORT``, no trailing slash), ``db_path``, ``tokens_path``,
  ``log_path`` (the subprocess's stderr/stdout: one line per batch);
- ``token`` / ``device_id``: a device registered before start (``"device-1"``);
- ``add_device(device_id) -> token``: register another device; the running collector
  picks it up without a restart;
- ``stats() -> dict``: ``GET /v1/stats`` with ``token`` (raises on a non-200);
- ``records(device_id=None) -> list[dict]``: the stored rows, read straight from SQLite
  (``inputs``/``outputs``/``flags`` decoded), ordered by ``ts`` then ``id``;
- ``restart()``: SIGTERM, wait for a clean exit, start again on the SAME port and files;
- ``stop()``: SIGTERM and wait for a clean exit (exit status 0, else ``AssertionError``);
  ``kill()``: SIGKILL, for crash tests. Teardown stops it if still running.

``collector_factory`` (function scope) makes more of them, optionally with other limits:
keyword arguments are ``edgepack collector`` options with underscores, e.g.
``collector_factory(max_body_bytes=65536, max_records=10, max_pending_batches=1, lock_timeout=0.2)``.
``start_collector(directory, **limits)`` does the same outside fixtures (e.g. for a
module-scoped fixture built on ``tmp_path_factory``); call ``.stop()`` yourself.

Batches use the HTTP contract of ``telemetry.collector`` (``POST /v1/batches``): note that
``bundle_sha256`` must be 64 hex digits and record ids UUID strings, or the answer is 422.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class RunningCollector:
    """One ``edgepack collector`` subprocess and its files; see the module docstring."""

    def __init__(self, directory: Path, *, device_id: str = "device-1", **limits: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.db_path = directory / "collector.db"
        self.tokens_path = directory / "tokens.json"
        self.log_path = directory / "collector.log"
        self.limits = limits
        self.device_id = device_id
        self.token = self.add_device(device_id)
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def add_device(self, device_id: str, *, rotate: bool = False) -> str:
        """Register ``device_id`` in the tokens file and return its new token."""
        from telemetry.collector import add_token

        return add_token(self.tokens_path, device_id, rotate=rotate)

    def _command(self) -> list[str]:
        args = [
            sys.executable,
            "-c",
            "from edgepack.cli import main; main()",
            "collector",
            "--db",
            str(self.db_path),
            "--tokens",
            str(self.tokens_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        for name, value in self.limits.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        return args

    def start(self) -> None:
        """Start the subprocess (same port as before, if it ran already) and wait for /healthz."""
        assert self.process is None or self.process.poll() is not None, "collector already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self._command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.port:
            match = LISTENING.search(self._log_since(offset))
            if match:
                self.port = int(match.group(1))
            else:
                self._check_alive(deadline)
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            self._check_alive(deadline)
            time.sleep(0.05)

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"collector exited with {self.process.returncode}:\n{self.log()}")
        if time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"collector did not become healthy in {START_TIMEOUT}s:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM and wait; a clean shutdown exits 0."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"collector ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.log()}") from None
        assert code == 0, f"collector exited with {code} on SIGTERM:\n{self.log()}"

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Clean stop, then start again on the same port with the same files."""
        self.stop()
        self.start()

    def log(self) -> str:
        """Everything the collector process wrote so far."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def stats(self, token: str | None = None) -> dict[str, Any]:
        """``GET /v1/stats`` with ``token`` (default: the fixture device's)."""
        response = httpx.get(
            f"{self.url}/v1/stats", headers={"Authorization": f"Bearer {token or self.token}"}, timeout=10.0
        )
        response.raise_for_status()
        return response.json()

    def records(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records read straight from SQLite (WAL lets this run beside the collector)."""
        if not self.db_path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            connection.row_factory = sqlite3.Row
            has_table = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'records'").fetchone()
            if not has_table:
                return []
            sql = "SELECT * FROM records"
            params: tuple[str, ...] = ()
            if device_id is not None:
                sql += " WHERE device = ?"
                params = (device_id,)
            rows = [dict(row) for row in connection.execute(sql + " ORDER BY ts, id", params)]
        finally:
            connection.close()
        for row in rows:
            for key in ("inputs", "outputs", "flags"):
                row[key] = json.loads(row[key])
        return rows

    def devices(self) -> dict[str, dict[str, Any]]:
        """The stored per-device rows (counters, batches, first/last seen), by device id."""
        if not self.db_path.exists():
            return {}
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            connection.row_factory = sqlite3.Row
            has_table = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'devices'").fetchone()
            return {row["device"]: dict(row) for row in connection.execute("SELECT * FROM devices")} if has_table else {}
        finally:
            connection.close()


def start_collector(directory: Path, **limits: int) -> RunningCollector:
    """Start a collector with its files in ``directory``; the caller stops it."""
    return RunningCollector(directory, **limits)


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., RunningCollector]]:
    started: list[RunningCollector] = []

    def make(**limits: int) -> RunningCollector:
        running = start_collector(tmp_path / f"collector-{len(started)}", **limits)
        started.append(running)
        return running

    yield make
    for running in started:
        if running.running:
            running.stop()


@pytest.fixture
def collector(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory()


__all__ = ["RunningCollector", "collector", "collector_factory", "start_collector"]
