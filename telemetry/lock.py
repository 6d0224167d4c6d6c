"""The cross-process write lock of a buffer file (``<db>-lock``).

Why a lock file as well as SQLite's own locks: the bundled SQLite (3.40.1) predates the
WAL-reset fix of 3.51.3. That race needs a checkpoint running while *another* connection
commits the transaction that restarts the WAL. ``edgepack sync`` deletes delivered rows
from its own process while the application keeps recording in another, so two connections
do write the same WAL. Every write transaction (its automatic checkpoint runs inside the
commit), the final close (which may checkpoint), the salvage of a damaged file and the
upgrade of an old one hold an exclusive ``flock`` on ``<db>-lock``; with every writer and
checkpointer serialised by it, a checkpoint can never overlap another connection's
commit, whichever process they live in. Readers take no lock. The lock is held for a
group commit (milliseconds), never across a network request; while the buffer's writer
is behind (records queued for the next commit already), it keeps the lock from one
commit to the next for at most ``telemetry.writer.KEEP_LOCK_FOR`` (0.1 s) at a stretch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock there; use one process per buffer file
    fcntl = None  # type: ignore[assignment]


class WriteLock:
    """An exclusive ``flock`` on ``<db>-lock`` (created owner-only); re-entrant per object.

    ``keep()`` makes the next release keep the lock (the writer is behind and commits
    again at once): it is then taken again without a system call, and ``fresh`` says
    whether it was (re)taken since the last time. ``release()`` gives a kept lock up.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._depth = 0
        self._kept = False
        self._keep_next = False
        self.fresh = True
        """Whether the outermost ``held()`` took the lock (rather than finding it kept):
        only then can another process have written (or salvaged) the file since."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        if self._depth == 0:
            if self._kept:
                self.fresh = False
            else:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                self.fresh = True
            self._kept = False
        self._depth += 1
        try:
            yield
        except BaseException:
            self._keep_next = False  # after a failure, never keep it
            raise
        finally:
            self._depth -= 1
            if self._depth == 0:
                if self._keep_next:
                    self._keep_next = False
                    self._kept = True
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def keep(self) -> None:
        """Keep the lock when the current (or next) outermost ``held()`` ends."""
        self._keep_next = True

    def release(self) -> None:
        """Give up a kept lock (another process may write again)."""
        self._keep_next = False
        if self._kept and self._depth == 0:
            self._kept = False
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)  # closing the file gives a kept lock up too
