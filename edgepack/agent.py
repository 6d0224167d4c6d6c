"""The device agent: ``edgepack serve`` and ``edgepack sync`` as two supervised child processes.

Two processes rather than two threads: each keeps its own signal handling and exit
status, a crash of one cannot corrupt the other's state, and the buffer is designed for
a recording process and a syncing process side by side. When either child exits, the
agent stops the other and exits with the first one's status, so that a container
runtime (restart policy) or systemd restarts the pair.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

STOP_GRACE = 20.0
"""Seconds a child gets between SIGTERM and SIGKILL (sync finishes its request in flight)."""


class Agent:
    def __init__(self, children: Mapping[str, Sequence[str]], *, python: str = sys.executable) -> None:
        self.children = {name: [python, "-m", "edgepack", *argv] for name, argv in children.items()}
        self._stopping: int | None = None

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = signum

    def run(self) -> int:
        """Start every child, wait for the first to exit (or a signal), stop the rest."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        running: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, argv in self.children.items():
                running[name] = subprocess.Popen(argv)
                print(f"edgepack agent: started {name} (pid {running[name].pid})", file=sys.stderr, flush=True)
            first: tuple[str, int] | None = None
            while first is None and self._stopping is None:
                for name, child in running.items():
                    code = child.poll()
                    if code is not None:
                        first = (name, code)
                        break
                else:
                    time.sleep(0.2)
            if first is not None:
                print(f"edgepack agent: {first[0]} exited with status {first[1]}; stopping the others", file=sys.stderr, flush=True)
            return self._stop_all(running, first)
        except BaseException:
            self._stop_all(running, None)
            raise

    def _stop_all(self, running: Mapping[str, subprocess.Popen[bytes]], first: tuple[str, int] | None) -> int:
        for child in running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in running.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if first is not None:
            return first[1]
        codes = [child.returncode for child in running.values()]
        # Stopped by a signal: children that exited 0 or by our SIGTERM count as a clean stop.
        return next((c for c in codes if c not in (0, -signal.SIGTERM)), 0)
