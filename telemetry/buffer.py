"""The device-side prediction buffer: ``record()`` enqueues, one writer thread commits.

``record()`` packs the record's values into a small blob and appends it to an in-memory
queue (a few microseconds), so the application never waits for the disk. A single
background thread owns the only SQLite connection of the buffer: it turns queued records
into rows (UUID, sampling) and commits them in groups of at most ``group_size`` records or
``group_delay`` seconds, with multi-row INSERTs whose SQLite work runs without the GIL.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from .encoding import names_of, pack
from .errors import BufferClosedError, FlushTimeout, OptionsError, RecordError, StorageError, TelemetryError
from .ids import IdClock, sample_key
from .rows import ROW_OVERHEAD, Context, Row, StoredRecord
from .store import Store

T = TypeVar("T")

_SYNCHRONOUS = {"power": "FULL", "process": "NORMAL"}
_MAX_CONTEXTS = 1024


@dataclass(frozen=True, kw_only=True)
class BufferOptions:
    """How a ``Buffer`` stores records."""

    durability: Literal["power", "process"] = "power"
    """``"power"``: committed records survive power loss (``synchronous=FULL``).
    ``"process"``: they survive process crashes only (``synchronous=NORMAL``), for less I/O."""
    max_bytes: int | None = 256 * 1024 * 1024
    """Upper bound on stored record bytes (payload plus a fixed per-row overhead);
    ``None`` for no bound. Dead letters are kept up to a quarter of it on top (oldest
    discarded first, still counted). The file can exceed it by SQLite page slack and the WAL."""
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    """What to give up when ``max_bytes`` is reached; dropped records are counted.
    ``"drop_newest"`` refuses new records from the first that does not fit until a
    delivery makes room, so the buffer always holds the oldest records without holes."""
    sample_rate: float = 1.0
    """Fraction of records kept, decided by the record's UUID (so deterministic per
    record); the others are counted as ``sampled_out``."""
    group_size: int = 1000
    """Most records committed in one transaction."""
    group_delay: float = 0.05
    """Longest a recorded record waits in memory before its group is committed, in seconds."""
    max_queued: int = 250_000
    """Records held in memory waiting for the writer (a packed 31-feature record takes
    under 1 KB there); beyond it new records are dropped and counted, so a stalled disk
    cannot exhaust memory. Lower it on small devices."""
    busy_timeout: float = 30.0
    """Seconds to wait for a lock held by another process (e.g. ``edgepack sync``)."""
    retry_delay: float = 1.0
    """Seconds between attempts when the disk refuses a write (records stay queued)."""
    create: bool = True
    """Create the file if it does not exist; ``False`` makes a missing file an error."""

    def __post_init__(self) -> None:
        if self.durability not in _SYNCHRONOUS:
            raise OptionsError(f"durability={self.durability!r}: expected 'power' or 'process'")
        if self.when_full not in ("drop_oldest", "drop_newest"):
            raise OptionsError(f"when_full={self.when_full!r}: expected 'drop_oldest' or 'drop_newest'")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise OptionsError(f"max_bytes={self.max_bytes!r}: expected a positive number of bytes or None")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise OptionsError(f"sample_rate={self.sample_rate!r}: expected a fraction between 0 and 1")
        if self.group_size < 1 or self.max_queued < 1:
            raise OptionsError("group_size and max_queued must be at least 1")
        if self.group_delay < 0 or self.busy_timeout < 0 or self.retry_delay <= 0:
            raise OptionsError("group_delay and busy_timeout must be >= 0 and retry_delay > 0 seconds")


@dataclass(frozen=True, kw_only=True)
class BufferStats:
    """Persistent counts of a buffer (totals since the file was created)."""

    recorded: int
    """Records accepted by ``record()`` and committed (including sampled-out and dropped)."""
    pending: int
    """Records stored and waiting to be sent."""
    delivered: int
    """Records the collector acknowledged (then deleted here)."""
    dropped: int
    """Records given up because the buffer was full (disk bound or memory queue)."""
    sampled_out: int
    """Records skipped by ``sample_rate``."""
    dead_lettered: int
    """Records the collector refused as malformed, moved to the ``dead_letters`` table."""
    lost: int
    """Records accepted and committed that can never be sent: on damaged pages of the file
    (which was moved aside and salvaged) or in commits that went missing with the WAL.
    Logged as errors when found, and sent home with every batch."""
    stored_bytes: int
    """Bytes counted against ``max_bytes``."""


class _Job:
    """Work for the writer thread, queued behind the records recorded before it."""

    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[Store], Any] | None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_CLOSE = _Job(None)  # identity marker; never waited on


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


class Buffer:
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
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._closed = False
        self._group_size = self.options.group_size
        self._max_queued = self.options.max_queued
        rate = self.options.sample_rate
        self._keep_below = None if rate >= 1.0 else int(rate * 2**32)
        self._last_error: StorageError | None = None
        self._contexts: dict[tuple[Any, ...], Context] = {}  # writer thread only
        self._ids = IdClock()  # writer thread only
        started = _Job(None)
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"edgepack-buffer:{self.path.name}", daemon=True)
        self._thread.start()
        started.done.wait()
        if started.error is not None:
            raise started.error
        _open_buffers.add(self)

    # -- the hot path -------------------------------------------------------------------

    def record(
        self,
        *,
        model: str,
        version: str,
        bundle_sha256: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> None:
        """Queue one prediction; it is committed within ``group_delay`` (see ``flush``).

        At commit it gets a UUID (version 7: time-ordered, see ``telemetry.ids``), its
        identity at the collector forever, and a row id that is never reused. The values
        are packed here, so later changes to the mappings do not reach the record; numpy values are converted by duck typing and
        anything JSON lacks is kept as text. Bad argument shapes raise ``RecordError``.
        """
        try:
            names = tuple(inputs)
            values = tuple(inputs.values())
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"inputs and outputs must be mappings and flags a sequence: {exc}") from exc
        self._enqueue(model, version, bundle_sha256, names, values, outputs, flags)

    def record_values(
        self,
        *,
        model: str,
        version: str,
        bundle_sha256: str,
        names: tuple[str, ...],
        values: tuple[Any, ...],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> None:
        """``record`` with the inputs as two equally long tuples, names and values.

        The runtime calls this when a sink has it: it saves building a dict per
        prediction, and passing the same ``names`` object every time makes finding the
        record's context an identity check.
        """
        self._enqueue(model, version, bundle_sha256, names, values, outputs, flags)

    def _enqueue(
        self,
        model: str,
        version: str,
        bundle_sha256: str,
        names: tuple[str, ...],
        values: tuple[Any, ...],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> None:
        # Positional on purpose: a keyword call costs ~0.5 µs here, per record.
        if self._closed:
            raise BufferClosedError(f"telemetry buffer {self.path} is closed; record() needs an open buffer")
        if type(model) is not str or type(version) is not str or type(bundle_sha256) is not str:
            raise RecordError(
                f"model, version and bundle_sha256 must be str, got {type(model).__name__}, "
                f"{type(version).__name__}, {type(bundle_sha256).__name__}"
            )
        if type(flags) is str:
            raise RecordError("flags must be a sequence of str (e.g. ['out_of_range:temp_c']), got a single str")
        if type(names) is not tuple or type(values) is not tuple or len(names) != len(values):
            raise RecordError(
                f"names and values must be tuples of the same length, got {type(names).__name__} "
                f"of {len(names) if hasattr(names, '__len__') else '?'} and {type(values).__name__}"
            )
        try:
            flags = tuple(flags)
        except TypeError as exc:
            raise RecordError(f"inputs and outputs must be mappings and flags a sequence: {exc}") from exc
        if type(outputs) is not dict and not isinstance(outputs, Mapping):
            raise RecordError(f"inputs and outputs must be mappings and flags a sequence: outputs is a {type(outputs).__name__}")
        queue = self._queue
        if len(queue) >= self._max_queued:
            self._lost.append(None)
            return
        # Packing here rather than on the writer thread: the work is the same, but done by
        # the caller it cannot convoy with it on the GIL, and the writer's share becomes
        # mostly SQLite time, which runs without the GIL.
        queue.append((time.time(), model, version, bundle_sha256, names, pack(values, outputs, flags)))
        # Order matters: append, then signal. The writer clears the signal before it
        # drains, so a record is either drained or finds the signal cleared and sets it.
        if not self._wake.is_set():
            self._wake.set()
        if len(queue) >= self._group_size and not self._hurry.is_set():
            self._hurry.set()

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

    def oldest(self, limit: int, *, after: int = 0) -> list[StoredRecord]:
        """The ``limit`` oldest pending records after row ``after`` (not removed: see ``acknowledge``)."""
        return self._call(lambda store: store.oldest(limit, after))

    def acknowledge(self, rowids: Sequence[int], *, keep_hold: bool = False) -> int:
        """Delete records the collector stored, in one transaction; returns how many.

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
            "sampled_out": values["sampled_out"],
            "dead_lettered": values["dead_lettered"],
            "lost": values["lost"],
        }

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

    # -- the writer thread ----------------------------------------------------------------

    def _run(self, started: _Job) -> None:
        opts = self.options
        try:
            store = Store(self.path, synchronous=_SYNCHRONOUS[opts.durability], busy_timeout=opts.busy_timeout, create=opts.create)
        except BaseException as exc:
            started.error = exc
            started.done.set()
            return
        started.done.set()
        try:
            while True:
                self._wake.wait(None if self._last_error is None else opts.retry_delay)
                self._wake.clear()
                if not self._hurry.is_set():
                    self._hurry.wait(opts.group_delay)  # let a group form
                self._hurry.clear()
                if self._drain(store):
                    return
                if self._closed and self._last_error is not None:
                    return  # closing and the disk still refuses: close() reports the loss
        finally:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - nothing left to report it to
                pass

    def _drain(self, store: Store) -> bool:
        """Commit and run everything queued; True once the close marker is reached."""
        queue = self._queue
        group: list[tuple] = []
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if type(item) is tuple:
                group.append(item)
                if len(group) < self._group_size:
                    continue
                job = None
            else:
                job = item
            if group and not self._commit(store, group, job):
                return False
            group = []
            if job is _CLOSE:
                return True
            if job is not None:
                self._run_job(store, job)
        if group and not self._commit(store, group, None):
            return False
        return False

    def _commit(self, store: Store, group: list[tuple], job: _Job | None) -> bool:
        lost = len(self._lost)
        rows, sampled_out = self._rows(group)
        try:
            store.insert(
                rows,
                accepted=len(group) + lost,
                sampled_out=sampled_out,
                lost=lost,
                max_bytes=self.options.max_bytes,
                drop_oldest=self.options.when_full == "drop_oldest",
            )
        except StorageError as exc:
            # Keep every accepted record, in order, for the next attempt; whoever waits
            # for them learns why now instead of hanging.
            self._last_error = exc
            self._queue.extendleft(reversed(group))
            if job is not None and job is not _CLOSE:
                job.error = type(exc)(f"records are not durable yet: {exc}")
                job.done.set()
            elif job is _CLOSE:
                self._queue.append(_CLOSE)
            self._fail_waiters(exc)
            return False
        for _ in range(lost):
            self._lost.popleft()
        self._last_error = None
        return True

    def _rows(self, group: list[tuple]) -> tuple[list[Row], int]:
        ids = self._ids.take(len(group))
        keep_below = self._keep_below
        contexts = self._contexts
        rows = []
        sampled_out = 0
        key: tuple[Any, ...] = ()
        context: Context | None = None
        for uid, item in zip(ids, group):
            if keep_below is not None and sample_key(uid) >= keep_below:
                sampled_out += 1
                continue
            # Consecutive records nearly always share their context: compare (the names
            # are the same str objects, so this is a pointer walk) before hashing.
            if context is None or key != item[1:5]:
                key = item[1:5]
                context = contexts.get(key)
                if context is None:
                    if len(contexts) >= _MAX_CONTEXTS:
                        contexts.clear()  # an app with ever-changing input names: stay bounded
                    context = contexts[key] = Context(item[1], item[2], item[3], names_of(item[4]))
            payload = item[5]
            rows.append((uid, item[0], context, payload, len(payload) + ROW_OVERHEAD))
        return rows, sampled_out

    def _fail_waiters(self, exc: StorageError) -> None:
        # Jobs waiting behind records that could not be committed learn why now instead
        # of hanging; the records themselves stay queued.
        for item in list(self._queue):
            if isinstance(item, _Job) and item is not _CLOSE and not item.done.is_set():
                try:
                    self._queue.remove(item)
                except ValueError:
                    continue
                item.error = type(exc)(f"records are not durable yet: {exc}")
                item.done.set()

    def _run_job(self, store: Store, job: _Job) -> None:
        try:
            if job.fn is not None:
                job.result = job.fn(store)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            job.error = exc
        finally:
            job.done.set()
