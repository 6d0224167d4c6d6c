"""The device-side prediction buffer: ``record()`` enqueues, one writer thread commits.

``record()`` gives the record its UUID (returned to the caller), decides sampling, packs
the record's values into a small blob and appends it to an in-memory queue (a few
microseconds, ``telemetry.intake``), so the application never waits for the disk. A
single background thread owns the only SQLite connection of the buffer: it commits what
``group_delay`` seconds queued (or a whole commit's worth, if sooner), in chunks of at
most ``group_size`` records, each run of one context as ONE row (``telemetry.chunks``),
so SQLite's work per record is divided by the chunk and the commit's by the group.
Everything else that touches the file (``flush``, ``pending``, the sync service's reads
and deletes) is a job queued behind the records, run by the same thread, so a job always
sees every record recorded before it.

Durability. The file is in WAL mode. ``durability="power"`` (the default) commits with
``synchronous=FULL``: a committed group survives a power cut or kernel crash.
``durability="process"`` uses ``synchronous=NORMAL``: a committed group survives the
application crashing or being killed, but the last groups before a power cut may be lost
(never corrupted). Either way ``flush()`` returns only once every record recorded before
the call is committed at that level; records still in the in-memory queue when the
process dies were never acknowledged.

Running ``edgepack sync`` in another process on the same file is supported: see
``telemetry.store`` for how the two processes' writers are serialised.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from . import feedback as _feedback
from .errors import BufferClosedError, FlushTimeout, OptionsError, StorageError, TelemetryError
from .ids import IdClock
from .intake import Intake
from .options import BufferOptions
from .outcomes import BufferStats
from .rows import Context
from .store import Store
from .writer import _CLOSE, Writer, _Job

T = TypeVar("T")

__all__ = ["Buffer", "BufferOptions", "BufferStats"]


_open_buffers: weakref.WeakSet[Buffer] = weakref.WeakSet()


@atexit.register
def _close_open_buffers() -> None:
    # The writer is a daemon thread (a forgotten close() must not hang interpreter exit),
    # so commit what is queued on a normal exit instead.
    for buffer in list(_open_buffers):
        try:
            buffer.close(timeout=10)
        except TelemetryError:
            pass


class Buffer(Intake, Writer):
    """A durable SQLite queue of predictions waiting to be sent home.

    ``Buffer(path)`` or ``Buffer(path, BufferOptions(...))``; option fields may also be
    given as keywords: ``Buffer(path, durability="process", max_bytes=10_000_000)``.
    """

    def __init__(self, path: str | os.PathLike[str], options: BufferOptions | None = None, **overrides: Any) -> None:
        known = {f.name for f in fields(BufferOptions)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise OptionsError(f"unknown buffer option(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        self.options = replace(options or BufferOptions(), **overrides)
        self.path = Path(path)
        self._queue: deque[Any] = deque()
        self._lost: deque[None] = deque()
        self._sampled: deque[None] = deque()
        self._wake = threading.Event()
        self._woken = False
        """True once a record set ``_wake`` since the writer last cleared it."""
        self._hurry = threading.Event()
        self._closed = False
        self._group_size = self.options.group_size
        self._max_queued = self.options.max_queued
        self._size_commits(1024.0)  # a guess (a 31-feature record packs to ~330 bytes), then measured per commit
        rate = self.options.sample_rate
        self._keep_below = None if rate >= 1.0 else int(rate * 2**32)
        self._last_error: StorageError | None = None
        self._contexts: dict[bytes, Context] = {}  # writer thread only
        self._current: tuple[tuple[Any, ...], Any] = ((None, None, None, None), None)
        """The last record's context key (model, version, bundle_sha256, names) and push function (see ``telemetry.intake``)."""
        self._ids = IdClock()
        self._kept_since: float | None = None
        started = _Job(None)
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"edgepack-buffer:{self.path.name}", daemon=True)
        self._thread.start()
        started.done.wait()
        if started.error is not None:
            raise started.error
        _open_buffers.add(self)

    # -- jobs -----------------------------------------------------------------------------

    def _call(self, fn: Callable[[Store], T] | None, timeout: float | None = None) -> T:
        if self._closed:
            raise BufferClosedError(f"telemetry buffer {self.path} is closed")
        job = _Job(fn)
        self._queue.append(job)
        self._hurry.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
            if not self._thread.is_alive():
                raise StorageError(f"the writer thread of {self.path} has stopped; {self._last_error or 'see earlier errors'}")
            if deadline is not None and time.monotonic() >= deadline:
                raise FlushTimeout(
                    f"records recorded into {self.path} were not durable within {timeout} s "
                    f"({len(self._queue)} still queued; last storage error: {self._last_error or 'none'})"
                )
        if job.error is not None:
            raise job.error
        return job.result

    def flush(self, timeout: float | None = None) -> None:
        """Return once every record recorded before this call is committed.

        Raises ``FlushTimeout`` after ``timeout`` seconds, ``StorageError`` if the disk
        refused the write (the records stay queued and are retried).
        """
        self._call(None, timeout)

    def stats(self) -> BufferStats:
        """Persistent counts, after committing everything recorded before the call."""
        values = self._call(lambda store: store.counters())
        values["dropped"] += len(self._lost)
        values["sampled_out"] += len(self._sampled)
        return BufferStats(**values)

    def pending(self) -> int:
        """Records waiting to be sent (committing everything recorded before the call)."""
        return self._call(lambda store: store.counters())["pending"]

    def dropped(self) -> int:
        """Records given up because the buffer was full, since the file was created."""
        return self.stats().dropped

    def sampled_out(self) -> int:
        """Records skipped by ``sample_rate``, since the file was created."""
        return self.stats().sampled_out

    def dead_lettered(self) -> int:
        """Records refused by the collector as malformed, since the file was created."""
        return self.stats().dead_lettered

    # Used by the sync service; each runs on the writer thread, after earlier records.

    def oldest(self, limit: int, *, after: int = 0, packed: bool = False) -> list[Any]:
        """The ``limit`` oldest pending records after row ``after`` (not removed: see ``acknowledge``).

        Records are read from their chunks and decoded (``StoredRecord``); a record of an
        unreadable chunk comes with ``payload=None``. With ``packed`` each stays the bytes
        ``record()`` packed (``PackedRecord``, what the sync service sends; ``payload``
        decodes on demand)."""
        return self._call(lambda store: store.oldest(limit, after, packed=packed))

    def acknowledge(self, rowids: Sequence[int], *, keep_hold: bool = False) -> int:
        """Delete records the collector stored, in one transaction; returns how many.

        A chunk is deleted once all its records are acknowledged; until then it keeps
        how many of its leading records are gone (records are acknowledged oldest first;
        one acknowledged out of that order is simply sent again, and the collector
        counts it as a duplicate).

        ``keep_hold`` leaves the current ``hold`` in place (it covers a later batch
        already in flight)."""
        return self._call(lambda store: store.delete(rowids, keep_hold=keep_hold))

    def hold(self, upto: int, seconds: float) -> None:
        """Keep records up to row ``upto`` from being dropped for ``seconds`` (0 releases)."""
        self._call(lambda store: store.hold(upto, seconds))

    def dead_letter(self, rowids: Sequence[int], *, batch_id: str, status: int, reason: str) -> int:
        """Move records the collector refused to the ``dead_letters`` table; returns how many."""
        keep = None if self.options.max_bytes is None else self.options.max_bytes // 4
        return self._call(
            lambda store: store.dead_letter(rowids, batch_id=batch_id, status=status, reason=reason, keep_bytes=keep)
        )

    def counters(self) -> dict[str, int]:
        """The cumulative counters sent with every batch (``dropped``, ``sampled_out``, ``dead_lettered``, ``lost``)."""
        values = self._call(lambda store: store.counters(pending=False))
        return {
            "dropped": values["dropped"] + len(self._lost),
            "sampled_out": values["sampled_out"] + len(self._sampled),
            "dead_lettered": values["dead_lettered"],
            "lost": values["lost"],
        }

    # -- ground truth (telemetry.feedback) -----------------------------------------------

    def feedback(self, record_id: str, label: Any, *, ts: float | None = None) -> bool:
        """Queue the ground truth ``label`` for the record ``record_id`` (the ``"record_id"``
        of a prediction); it reaches home with the next sync, exactly once.

        ``label`` is the class label in its original type (int, str, bool) or a number for
        a regressor; ``ts`` (Unix seconds) says when the truth was observed. Durable when
        this returns (the buffer's ``durability``). True if queued, False if the same label
        was already queued; ``FeedbackError`` for a bad argument or a different label
        already queued for the record. The collector checks the label against the
        record's model when it has the record.
        """
        return _feedback.queue_label(self, record_id, label, ts=ts)

    def pending_feedback(self) -> int:
        """Labels waiting to be sent home."""
        return _feedback.label_counts(self)["pending"]

    # -- lifecycle ----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Commit everything recorded so far and close the file. Idempotent.

        Stop recording threads first: a ``record()`` racing with ``close()`` may be refused
        (``BufferClosedError``) or, in a window of a few bytecodes, not be committed.
        """
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            _open_buffers.discard(self)
            self._queue.append(_CLOSE)
            self._hurry.set()
            self._wake.set()
            self._thread.join(timeout)
        unsaved = sum(1 for item in self._queue if type(item) is tuple)
        if unsaved and self._last_error is not None:
            raise StorageError(f"closed {self.path} with {unsaved} record(s) not saved: {self._last_error}")

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Buffer({str(self.path)!r}, durability={self.options.durability!r})"
