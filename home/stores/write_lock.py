"""The cross-process write lock of a collector's SQLite file (``<db>-lock``).

Several connections write one collector file: the records store, the feedback store, the
monitoring fold, the release status, the Parquet export's claims, and as many of each as
there are ``--workers`` processes. The bundled SQLite (3.40.1) predates the WAL-reset fix
of 3.51.3, whose race needs a checkpoint running while another connection commits the
transaction that restarts the WAL. So every write transaction edgepack runs on the file
(its automatic checkpoint runs inside its COMMIT) and every close of a write connection
(which may checkpoint) holds an exclusive ``flock`` on ``<db>-lock``, whichever process
and thread it runs in; the device's buffer does the same (``telemetry/lock.py``). Readers
take no lock. Other programs that write the file (an analyst's session, a backup) do not
know of the lock; SQLite's own locks and the busy timeout still guard against them.

The wait is bounded: a holder that hangs must not hang every request behind it, so the
lock is polled (without blocking) until the caller's timeout, then ``StoreError``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; run one collector process per file there
    fcntl = None  # type: ignore[assignment]

FIRST_POLL = 0.0002
LAST_POLL = 0.002
"""Seconds between attempts while another process holds the lock, doubling from the
first to the last: a batch is stored in milliseconds, so a coarser poll (SQLite's busy
handler sleeps up to 100 ms) would leave the file idle between two workers' batches."""


class WriteLock:
    """One process's hold on ``<db>-lock``: a thread lock (flock does not exclude two
    threads of one process that share its descriptor) and the flock over it. Re-entrant
    in the thread that holds it."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-lock")
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the lock, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        if not self._thread.acquire(timeout=max(timeout, 0.0)):
            raise self._timeout(timeout, "another thread of this process")
        try:
            if self._depth == 0:
                self._take(deadline, timeout)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None and fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def _take(self, deadline: float, timeout: float) -> None:
        if fcntl is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        pause = FIRST_POLL
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(timeout, "another edgepack process (a collector worker, edgepack export)") from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, LAST_POLL)

    def _timeout(self, timeout: float, holder: str) -> StoreError:
        return StoreError(
            f"the write lock {self.path} was held by {holder} for over {timeout:g} s; nothing was written, "
            "try again (a longer --lock-timeout waits longer)"
        )


def connection_lock(conn: sqlite3.Connection) -> tuple[WriteLock | None, float]:
    """The lock of the file ``conn`` has open as ``main`` (None for an in-memory database)
    and the connection's busy timeout in seconds, which bounds the wait for it too."""
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    return (write_lock(path) if path else None), timeout


@contextmanager
def locked(conn: sqlite3.Connection) -> Iterator[None]:
    """Hold the lock of ``conn``'s file (see ``connection_lock``)."""
    lock, timeout = connection_lock(conn)
    if lock is None:
        yield
        return
    with lock.held(timeout):
        yield


def close(conn: sqlite3.Connection) -> None:
    """Close a write connection under its file's lock: the last one to close checkpoints.
    Closed even when the lock does not come in time (``StoreError`` then says so)."""
    try:
        lock, timeout = connection_lock(conn)
    except sqlite3.ProgrammingError:  # closed already
        return
    if lock is None:
        conn.close()
        return
    try:
        with lock.held(timeout):
            conn.close()
    finally:
        conn.close()  # a no-op once closed


_locks: dict[Path, WriteLock] = {}
_locks_guard = threading.Lock()


def write_lock(db_path: str | Path) -> WriteLock:
    """The process's lock of the SQLite file ``db_path`` (one per file, shared by every
    connection to it in this process)."""
    key = Path(os.path.abspath(db_path))
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WriteLock(key)
        return lock
