"""Record ids: time-ordered UUIDs (RFC 9562 version 7), made when a record is recorded.

``record()`` returns its record's id (the application keeps it to attach ground truth
later, ``Buffer.feedback``), so the id is made on the recording thread by ``IdClock.next``
(thread-safe, about a microsecond). ``take`` makes a group at once.

A record's UUID is its identity at the collector forever. Time order matters there: the
collector's unique (device, id) index then grows at its end instead of dirtying a random
page per record (as UUID4s do), which keeps its inserts cheap however many records it
holds. Layout: 48 bits of Unix milliseconds, a 12-bit counter (RFC 9562 method 1: the ids
of one buffer are strictly ascending, continuing into the next millisecond when a
millisecond runs out of counter values), then 62 random bits. Uniqueness rests on the
random bits as much as on the clock: a clock set backwards only costs the ordering's
locality, never an id.
"""

from __future__ import annotations

import os
import threading
import time

_VARIANT = {c: "89ab"[int(c, 16) >> 2] for c in "0123456789abcdef"}
"""The first random hex digit with its top two bits replaced by the variant's (10)."""
_POOL = 8 * 512
"""Random bytes drawn per ``os.urandom`` call by ``next`` (one call per 512 ids)."""


class IdClock:
    """Makes ascending UUIDv7 strings; one per buffer. ``next`` may be called from any
    thread; ``take`` from one thread at a time, not concurrently with ``next``."""

    def __init__(self) -> None:
        self._ms = -1
        self._counter = -1
        self._lock = threading.Lock()
        self._pool = ""  # hex digits of random bytes, 16 per id
        self._pos = 0
        self._prefix: str | None = None

    def next(self, now: float) -> str:
        """One new id for a record made at ``now`` (Unix seconds), greater than every id
        this clock made before."""
        ms = int(now * 1000)
        # About a microsecond: the recording thread pays it, so the stamp is formatted once
        # per millisecond and the random bits come from a pool drawn 512 ids at a time.
        with self._lock:
            if ms > self._ms:
                counter = 0
            else:
                ms = self._ms
                counter = self._counter + 1
                if counter > 0xFFF:
                    ms += 1
                    counter = 0
            if ms != self._ms or self._prefix is None:
                self._prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
            self._ms, self._counter = ms, counter
            pos = self._pos
            if pos >= len(self._pool):
                self._pool = os.urandom(_POOL).hex()
                pos = 0
            self._pos = pos + 16
            r = self._pool[pos : pos + 16]
            prefix = self._prefix
        return f"{prefix}{counter:03x}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}"

    def take(self, n: int, now: float | None = None) -> list[str]:
        """``n`` new ids, each greater than every id this clock made before."""
        ms = max(int((time.time() if now is None else now) * 1000), self._ms)
        counter = self._counter + 1 if ms == self._ms else 0
        # One urandom call per group: uuid.uuid4() costs ~3 µs per id on a small CPU.
        raw = os.urandom(8 * n)
        hexes = raw.hex()
        out = []
        prefix = ""
        stamped = -1
        for i in range(n):
            if counter > 0xFFF:
                ms += 1
                counter = 0
            if ms != stamped:
                stamped = ms
                stamp = f"{ms:012x}"
                prefix = f"{stamp[:8]}-{stamp[8:]}-7"
            r = hexes[16 * i : 16 * i + 16]
            # The variant's two bits (10) replace the top two of the random bits.
            out.append(f"{prefix}{counter:03x}-{'89ab'[raw[8 * i] >> 6]}{r[1:4]}-{r[4:]}")
            counter += 1
        self._ms, self._counter = ms, counter - 1
        return out


def sample_key(uid: str) -> int:
    """32 random bits of a record's UUID (its last 8 hex digits): ``sample_rate`` keeps a
    record when this is below ``rate * 2**32``, so the decision is a function of the id."""
    return int(uid[-8:], 16)
