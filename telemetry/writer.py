"""The buffer's writer thread: drains the in-memory queue into the store, in groups.

One thread per buffer owns the buffer's only SQLite connection (a ``Store``). It waits
for a record, then ``group_delay`` (or less: a commit's worth queued, a job), splits the
queued records into runs of one context (each stored as one chunk row), commits them in
one transaction, and runs the jobs queued behind them (``flush``, ``pending``, the sync
service's reads and deletes), so a job always sees every record recorded before it.
When the disk refuses a commit, the records go back to the front of the queue, in
order, and are retried every ``retry_delay``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

from .encoding import unpack_context
from .errors import StorageError
from .options import SYNCHRONOUS, BufferOptions
from .rows import ROW_OVERHEAD, Context, Run
from .store import Store

_MAX_CONTEXTS = 1024
_ID, _TS, _KEY, _PAYLOAD = (itemgetter(i) for i in range(4))  # the fields of a queued record
CHUNKS_PER_COMMIT = 32
"""Most chunks (of up to ``group_size`` records each) one commit stores. A commit costs
the writer GIL hand-offs (every SQLite call, the lock, the ledger write gives the GIL
up), each waiting up to the interpreter's switch interval (5 ms) behind a busy
recording thread; so a commit takes every chunk queued within ``group_delay`` (or
behind a commit that was still running), all in one INSERT, still one chunk per
``group_size`` records, and the hand-offs are paid per commit rather than per chunk.
A commit is BEGIN, one SELECT of the counters (skipped on a kept lock,
``KEEP_LOCK_FOR``), the INSERT, one UPDATE of the counters, COMMIT, the ledger's write,
and the lock."""
COMMIT_BYTES = 4 * 1024 * 1024
"""Most record bytes one commit of several chunks stores (and at most a quarter of
``max_bytes``): a commit's pages are in the file and the WAL before ``drop_oldest``
frees older ones, so this bounds what a commit adds on top of ``max_bytes``. One chunk
is always allowed."""


KEEP_LOCK_FOR = 0.1
"""Longest the writer keeps the cross-process lock across back-to-back commits (seconds)."""


class _Job:
    """Work for the writer thread, queued behind the records recorded before it."""

    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[Store], Any] | None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_CLOSE = _Job(None)  # identity marker; never waited on


class Writer:
    """The writer thread's side of a ``Buffer`` (the buffer's attributes, set by its ``__init__``)."""

    path: Path
    options: BufferOptions
    _queue: deque[Any]
    _lost: deque[None]
    _sampled: deque[None]
    _wake: threading.Event
    _woken: bool
    _hurry: threading.Event
    _closed: bool
    _group_size: int
    _commit_records: int
    """Most records one commit takes (a multiple of ``_group_size``, see ``COMMIT_BYTES``)."""
    _hurry_at: int
    """Queued records at which recording wakes the writer before ``group_delay`` is over."""
    _max_queued: int
    _last_error: StorageError | None
    _contexts: dict[bytes, Context]
    _kept_since: float | None
    """When the writer began keeping the cross-process lock across commits (None: it does not)."""

    def _run(self, started: _Job) -> None:
        opts = self.options
        try:
            store = Store(self.path, synchronous=SYNCHRONOUS[opts.durability], busy_timeout=opts.busy_timeout, create=opts.create)
        except BaseException as exc:
            started.error = exc
            started.done.set()
            return
        started.done.set()
        try:
            while True:
                self._wake.wait(None if self._last_error is None else opts.retry_delay)
                self._wake.clear()
                self._woken = False  # after the event: see Intake._pusher (telemetry/intake.py)
                if not self._hurry.is_set():
                    self._hurry.wait(opts.group_delay)  # let a group form
                self._hurry.clear()
                try:
                    if self._drain(store):
                        return
                finally:
                    # Caught up (or failed): the lock kept between back-to-back commits
                    # goes back to other processes before this thread waits.
                    store.release_lock()
                    self._kept_since = None
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
                if len(group) < self._commit_records:
                    continue
                job = None
            else:
                job = item
            if (group or self._lost or self._sampled) and not self._commit(store, group, job):
                return False
            group = []
            if job is _CLOSE:
                return True
            if job is not None:
                self._run_job(store, job)
        # Counters alone (sampled out, lost) are committed too: sample_rate=0 stores no
        # record but must count every one.
        if (group or self._lost or self._sampled) and not self._commit(store, group, None):
            return False
        return False

    def _commit(self, store: Store, group: list[tuple], job: _Job | None) -> bool:
        lost = len(self._lost)
        sampled_out = len(self._sampled)
        runs = self._runs(group)
        if group:
            self._size_commits(sum(run.size for run in runs) / len(group))
        if len(self._queue) >= self._group_size:
            # Behind: the next commit follows at once. Keep the cross-process lock for it
            # (a few statements fewer, each a GIL hand-off), but never longer than
            # KEEP_LOCK_FOR at a stretch, so that another process's writer gets its turn.
            now = time.monotonic()
            if self._kept_since is None:
                self._kept_since = now
            if now - self._kept_since < KEEP_LOCK_FOR:
                store.keep_lock()
            else:
                self._kept_since = None
        try:
            store.insert(
                runs,
                accepted=len(group) + lost + sampled_out,
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
        for _ in range(sampled_out):
            self._sampled.popleft()
        self._last_error = None
        return True

    def _size_commits(self, record_bytes: float) -> None:
        """Set how many records the next commits take, from the bytes of the last ones."""
        budget = COMMIT_BYTES if self.options.max_bytes is None else min(COMMIT_BYTES, self.options.max_bytes // 4)
        size = self._group_size
        self._commit_records = max(size, min(size * CHUNKS_PER_COMMIT, int(budget / max(record_bytes, 1.0)) // size * size))
        # Recording hurries the writer once a commit's worth is queued, or half of
        # ``max_queued`` (a small queue must not fill while it waits), never below a chunk.
        self._hurry_at = max(size, min(self._commit_records, self._max_queued // 2))

    def _runs(self, group: list[tuple]) -> list[Run]:
        """The group as runs of at most ``group_size`` consecutive records of one context (one chunk each)."""
        if not group:
            return []
        size = self._group_size
        if len(group) > size:
            return [run for first in range(0, len(group), size) for run in self._runs(group[first : first + size])]
        # A group of one context (nearly always: one model recording) becomes one run
        # without a Python step per record: record() gives consecutive records of one
        # context the same token object, so counting it is a pointer walk.
        # One C pass per field, each making the run's list at once (``zip(*group)`` makes
        # an iterator per record, and the lists were copies of its tuples: twice the
        # cost): the records were made on another core, so every pass is cache misses.
        keys = list(map(_KEY, group))
        first = keys[0]
        if keys.count(first) == len(keys):
            run = Run(self._context(first))
            run.ids, run.ts, run.payloads = list(map(_ID, group)), list(map(_TS, group)), list(map(_PAYLOAD, group))
            run.size = sum(map(len, run.payloads)) + ROW_OVERHEAD * len(group)
            return [run]
        runs: list[Run] = []
        key = b""
        current: Run | None = None
        for uid, stamp, item_key, payload in group:
            if current is None or (item_key is not key and item_key != key):
                key = item_key
                current = Run(self._context(key))
                runs.append(current)
            current.ids.append(uid)
            current.ts.append(stamp)
            current.payloads.append(payload)
        for run in runs:
            run.size = sum(map(len, run.payloads)) + ROW_OVERHEAD * len(run.payloads)
        return runs

    def _context(self, token: bytes) -> Context:
        """The context of ``token`` (``telemetry.encoding.pack_context``: model, version,
        bundle_sha256, input names)."""
        contexts = self._contexts
        context = contexts.get(token)
        if context is None:
            if len(contexts) >= _MAX_CONTEXTS:
                contexts.clear()  # an app with ever-changing input names: stay bounded
            context = contexts[token] = Context(*unpack_context(token))
        return context

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
