"""Record ids: time-ordered UUIDs (RFC 9562 version 7), made by ``record()`` as it is called.

A record's UUID is its identity at the collector forever, and ``record()`` returns it
(so an application can later attach a label to it). Time order matters at the
collector: its unique (device, id) index then grows at its end instead of dirtying a
random page per record (as UUID4s do), which keeps its inserts cheap however many
records it holds. Layout: 48 bits of Unix milliseconds, a 12-bit counter (RFC 9562
method 1: the ids of one buffer are strictly ascending, continuing into the next
millisecond when a millisecond runs out of counter values), then 62 random bits.
Uniqueness rests on the random bits as much as on the clock: a clock set backwards only
costs the ordering's locality, never an id.

Made one at a time on the recording thread, so each costs ~0.5 µs: the random bits come
from a pool refilled by one ``os.urandom`` call per 512 ids (``uuid.uuid4()`` costs
~3 µs per id on a small CPU), the millisecond's text is formatted once per millisecond,
and a lock keeps ids strictly ascending when several threads record.
"""

from __future__ import annotations

import os
import threading
import time

_POOL_IDS = 512
_VARIANT = {f"{d:x}": "89ab"[d >> 2] for d in range(16)}
"""The variant's two bits (10) replace the top two of the first random hex digit."""
_COUNTERS = tuple(f"{c:03x}" for c in range(0x1000))


def _tails(count: int) -> list[str]:
    """``count`` random id tails, ``-vrrr-rrrrrrrrrrrr`` (variant and 62 random bits)."""
    hexes = os.urandom(8 * count).hex()
    return [f"-{_VARIANT[hexes[i]]}{hexes[i + 1 : i + 4]}-{hexes[i + 4 : i + 16]}" for i in range(0, 16 * count, 16)]


class IdClock:
    """Makes ascending UUIDv7 strings; one per buffer, safe to share between threads."""

    def __init__(self) -> None:
        self._ms = -1
        self._counter = -1
        self._prefix = ""
        self._tails: list[str] = []
        self._pos = 0
        self._lock = threading.Lock()

    def _stamp(self, ms: int) -> None:
        stamp = f"{ms:012x}"
        self._prefix = f"{stamp[:8]}-{stamp[8:]}-7"

    def next(self, now: float) -> str:
        """One new id for a record made at ``now`` (Unix seconds), greater than every id
        this clock made before."""
        ms = int(now * 1000)
        with self._lock:
            if ms > self._ms:
                self._ms = ms
                counter = self._counter = 0
                self._stamp(ms)
            else:
                counter = self._counter + 1
                if counter > 0xFFF:
                    self._ms += 1
                    counter = 0
                    self._stamp(self._ms)
                self._counter = counter
            pos = self._pos
            if pos >= len(self._tails):
                self._tails = _tails(_POOL_IDS)
                pos = 0
            self._pos = pos + 1
            return self._prefix + _COUNTERS[counter] + self._tails[pos]

    def take(self, n: int, now: float | None = None) -> list[str]:
        """``n`` new ids, each greater than every id this clock made before."""
        when = time.time() if now is None else now
        return [self.next(when) for _ in range(n)]


def sample_key(uid: str) -> int:
    """32 random bits of a record's UUID (its last 8 hex digits): ``sample_rate`` keeps a
    record when this is below ``rate * 2**32``, so the decision is a function of the id."""
    return int(uid[-8:], 16)
