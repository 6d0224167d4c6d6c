"""The buffer's hot path: what ``record()`` does on the application's thread.

A record gets its UUID (returned to the caller), its sampling decision and its packed
bytes here, and joins the in-memory queue the writer thread drains (``telemetry.writer``).
Everything here runs once per prediction, so it is written for the interpreter: no
keyword calls inside, checks by ``type(...) is``, and the context (model, version,
bundle hash, input names) checked once per change, not per record.

Three ways in, from the most general to the cheapest:

- ``record(inputs=mapping, ...)``: any mapping of inputs (names taken from its keys);
- ``record_values(names=..., values=..., ...)``: the inputs as two tuples;
- ``recorder(model=..., version=..., bundle_sha256=..., names=...)``: the context checked
  once, and a function ``(values, outputs, flags) -> id`` that the runtime calls per
  prediction, positionally (``runtime.telemetry_hook``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .encoding import _strict_encode, pack, pack_context
from .errors import BufferClosedError, RecordError
from .ids import COUNTER_GROUPS, IdClock

RecordFn = Callable[[tuple[Any, ...], Mapping[str, Any], Sequence[str]], "str | None"]
"""What ``Intake.recorder`` returns: ``(values, outputs, flags) -> record id or None``."""


class Intake:
    """The recording side of a ``Buffer`` (the buffer's attributes, set by its ``__init__``)."""

    path: Path
    _queue: deque[Any]
    _lost: deque[None]
    _sampled: deque[None]
    _wake: threading.Event
    _woken: bool
    _hurry: threading.Event
    _closed: bool
    _group_size: int
    _hurry_at: int
    _max_queued: int
    _keep_below: int | None
    _current: tuple[tuple[Any, ...], Any]
    """(key, push) of the last record's context: (model, version, bundle_sha256, names) and its ``_pusher``."""
    _ids: IdClock

    def record(
        self,
        *,
        model: str,
        version: str,
        bundle_sha256: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> str | None:
        """Queue one prediction; it is committed within ``group_delay`` (see ``flush``).

        Returns the record's id: a UUID (version 7: time-ordered, see ``telemetry.ids``),
        its identity at the collector forever, which ``feedback`` takes to attach the
        prediction's ground truth later. Returns None when the record is not kept:
        sampled out (``sample_rate``) or refused at once because the in-memory queue is
        full (``max_queued``). A record given an id may still be dropped later by
        ``max_bytes`` (counted in ``dropped``). At commit it gets a row id that is never reused. The values
        are packed here, so later changes to the mappings do not reach the record; numpy values are converted by duck typing and
        anything JSON lacks is kept as text. Bad argument shapes raise ``RecordError``.
        """
        try:
            names = tuple(inputs)
            values = tuple(inputs.values())
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"inputs and outputs must be mappings and flags a sequence: {exc}") from exc
        last = self._current[0][3]
        if names == last:
            names = last  # the same names as the last record's: its object (see ``_enqueue``)
        return self._enqueue(model, version, bundle_sha256, names, values, outputs, flags)

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
    ) -> str | None:
        """``record`` with the inputs as two equally long tuples, names and values.

        Passing the same ``names`` object every time makes finding the record's context
        an identity check. Returns the record's id, like ``record``.
        """
        return self._enqueue(model, version, bundle_sha256, names, values, outputs, flags)

    def recorder(self, *, model: str, version: str, bundle_sha256: str, names: tuple[str, ...]) -> RecordFn:
        """A function that records predictions of one context: ``fn(values, outputs, flags)``.

        The same as ``record_values`` with these four arguments, checked once here
        (``RecordError``) rather than per record, and called positionally: what a
        prediction costs the application's thread is mostly the call itself. ``values``
        must be a tuple as long as ``names``. Returns the record's id, like ``record``.
        """
        if self._closed:
            raise BufferClosedError(f"telemetry buffer {self.path} is closed; record() needs an open buffer")
        return self._context_of(model, version, bundle_sha256, names)[1]

    def _enqueue(
        self,
        model: str,
        version: str,
        bundle_sha256: str,
        names: tuple[str, ...],
        values: tuple[Any, ...],
        outputs: Mapping[str, Any],
        flags: Sequence[str],
    ) -> str | None:
        # Positional on purpose: a keyword call costs ~0.5 µs here, per record.
        current = self._current  # one read: (key, push) always belong together
        key = current[0]
        if model is not key[0] or version is not key[1] or bundle_sha256 is not key[2] or names is not key[3]:
            # Another context than the last record's (or equal, in other objects): checked
            # once here; the queued records then share the context's token object
            # (``_pusher``), so the writer finds a group's context by comparing pointers.
            current = self._context_of(model, version, bundle_sha256, names)
        return current[1](values, outputs, flags)

    def _pusher(self, key: tuple[Any, ...], token: bytes) -> RecordFn:
        """The function that queues records of the (checked) context ``key``, each with
        ``token``, the context as bytes (``telemetry.encoding.pack_context``), one object
        for all: the writer finds a group's context by comparing pointers.

        A closure: what it reads per record (the queue, the id clock, the options) are
        its own variables, not attributes (~0.3 µs a record)."""
        buffer = self
        queue, lost, sampled, ids = self._queue, self._lost, self._sampled, self._ids
        wake, hurry = self._wake, self._hurry
        max_queued, group_size, keep_below = self._max_queued, self._group_size, self._keep_below
        width = len(key[3])
        clock = time.time
        encode = _strict_encode
        tail, counters = ids._tails.pop, COUNTER_GROUPS

        def push(values: tuple[Any, ...], outputs: Mapping[str, Any], flags: Sequence[str]) -> str | None:
            if buffer._closed:
                raise BufferClosedError(f"telemetry buffer {buffer.path} is closed; record() needs an open buffer")
            if type(values) is not tuple or len(values) != width:
                raise RecordError(
                    f"names and values must be tuples of the same length, got {width} names and "
                    f"{len(values) if type(values) is tuple else 'a ' + type(values).__name__} values"
                )
            if type(flags) is not list and type(flags) is not tuple:
                flags = _flags(flags)
            if type(outputs) is not dict and not isinstance(outputs, Mapping):
                raise RecordError(f"inputs and outputs must be mappings and flags a sequence: outputs is a {type(outputs).__name__}")
            now = clock()
            # ``IdClock.next`` inlined (a Python call is a tenth of what is left here).
            end, head, counter = ids._now
            if now * 1000 < end and (count := next(counter)) < 0x1000:
                try:
                    uid = f"{head}{counters[count]}{tail()}"
                except IndexError:
                    uid = f"{head}{counters[count]}{ids.tail()}"
            else:
                uid = ids.advance(now)
            if keep_below is not None and int(uid[-8:], 16) >= keep_below:
                # Decided by the id's random bits (``telemetry.ids.sample_key``); counted at
                # the next commit, like every accepted record.
                sampled.append(None)
                if not buffer._woken:
                    buffer._woken = True
                    wake.set()
                return None
            if len(queue) >= max_queued:
                # Never stored: an id returned here would name a record home never gets.
                lost.append(None)
                return None
            # Packing here rather than on the writer thread: the work is the same, but done by
            # the caller it cannot convoy with it on the GIL, and the writer's share becomes
            # mostly SQLite time, which runs without the GIL. (The flags list is encoded now,
            # so a later change to it does not reach the record either.)
            try:
                blob = encode((values, outputs, flags))  # ``pack``'s fast path, without its call
            except (TypeError, OverflowError, ValueError, RecursionError):
                blob = pack(values, outputs, flags)
            queue.append((uid, now, token, blob))  # nothing in it the garbage collector tracks
            # Order matters: append, then signal. The writer clears the signal (the event,
            # then ``_woken``, which spares a call to ``Event.is_set`` per record) before it
            # drains, so a record is either drained or finds ``_woken`` cleared and sets both.
            if not buffer._woken:
                buffer._woken = True
                wake.set()
            # The writer commits once ``group_delay`` has passed since the group's first
            # record, or earlier when a whole commit's worth is queued (several chunks;
            # ``_hurry_at``, see ``Writer._size_commits``). Not at every full chunk: a
            # commit costs the recording thread about half a millisecond (GIL hand-offs,
            # the writer's Python steps over records made on another core), so fewer
            # commits per record is what recording at a steady rate saves most by.
            # (``_hurry_at`` is never below ``group_size``: the first test only spares
            # most records the attribute read; ``_hurry_at`` changes with each commit.)
            if len(queue) >= group_size and len(queue) >= buffer._hurry_at and not hurry.is_set():
                hurry.set()
            return uid

        return push

    def _context_of(self, model: str, version: str, bundle_sha256: str, names: tuple[str, ...]) -> tuple[tuple[Any, ...], RecordFn]:
        """The (checked) key of a record's context and its push function; the last
        context's when equal."""
        if type(model) is not str or type(version) is not str or type(bundle_sha256) is not str:
            raise RecordError(
                f"model, version and bundle_sha256 must be str, got {type(model).__name__}, "
                f"{type(version).__name__}, {type(bundle_sha256).__name__}"
            )
        if type(names) is not tuple:
            raise RecordError(f"names and values must be tuples of the same length, got names as a {type(names).__name__}")
        key = (model, version, bundle_sha256, names)
        last = self._current
        if key == last[0]:
            return last
        try:
            token = pack_context(model, version, bundle_sha256, names)
        except UnicodeEncodeError as exc:
            # Checked here, once per context: the writer could not store it, and every
            # record queued behind it would wait for nothing.
            raise RecordError(
                f"model, version, bundle_sha256 and input names must be text that UTF-8 can encode: {exc} "
                f"(in {exc.object!r})"
            ) from exc
        current = (key, self._pusher(key, token))
        self._current = current
        return current


def _flags(flags: Any) -> tuple[str, ...]:
    if type(flags) is str:
        raise RecordError("flags must be a sequence of str (e.g. ['out_of_range:temp_c']), got a single str")
    try:
        return tuple(flags)
    except TypeError as exc:
        raise RecordError(f"inputs and outputs must be mappings and flags a sequence: {exc}") from exc
