"""``edgepack collector`` in a child process on a loopback port: for the quickstart, the
benchmarks and the tests, which all need a real collector they can start, stop and kill.

The child binds port 0 (or the port it had before a restart) and logs the address it
got; the parent reads it from the log, so there is no window in which another process
can take a port chosen in advance.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from .errors import CollectorError

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class CollectorProcess:
    """One ``edgepack collector --host 127.0.0.1`` child with its files.

    ``options`` are further command-line options by name with underscores, e.g.
    ``{"max_records": 10}`` for ``--max-records 10``. Output goes to ``log_path``.
    """

    def __init__(
        self,
        db_path: Path,
        tokens_path: Path,
        log_path: Path,
        *,
        options: Mapping[str, object] | None = None,
        start_timeout: float = 60.0,
        cwd: Path | None = None,
        db_url: str | None = None,
    ) -> None:
        self.db_path = db_path
        self.db_url = db_url
        """A postgresql:// URI to store into instead of the SQLite file ``db_path``."""
        self.tokens_path = tokens_path
        self.log_path = log_path
        self.options = dict(options or {})
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started, no trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self) -> list[str]:
        args = [sys.executable, "-m", "edgepack", "collector", "--db", self.db_url or str(self.db_path), "--tokens", str(self.tokens_path),
                "--host", "127.0.0.1", "--port", str(self.port)]
        for name, value in self.options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        return args

    def start(self) -> None:
        """Start the child (on its previous port after a stop) and wait until ``/healthz`` answers."""
        if self.running:
            raise CollectorError(f"the collector on {self.url} is already running")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The log names devices and what they sent: owner-only, like the store itself.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
            self.process = subprocess.Popen(self._command(), cwd=self.cwd, stdout=fd, stderr=subprocess.STDOUT)
        finally:
            os.close(fd)
        deadline = time.monotonic() + self.start_timeout
        while not self.port:
            match = LISTENING.search(self._log_since(offset))
            if match:
                self.port = int(match.group(1))
            else:
                self._check_alive(deadline)
                time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            self._check_alive(deadline)
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the exit status (a clean shutdown is 0); None if not running.

        A child that ignores SIGTERM for ``timeout`` seconds is killed and reported.
        """
        if not self.running:
            return None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CollectorError(f"the collector ignored SIGTERM for {timeout:g} s:\n{self.log()[-2000:]}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Everything the child wrote so far."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise CollectorError(f"the collector exited with {self.process.returncode}:\n{self.log()[-2000:]}")
        if time.monotonic() > deadline:
            self.kill()
            raise CollectorError(f"the collector did not become healthy in {self.start_timeout:g} s:\n{self.log()[-2000:]}")
