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

Made on the recording thread, so their cost is paid per record: ``next`` takes one id
from a block made for the current millisecond (~0.1 µs: a list pop, no lock). A block
is made in a fixed number of C calls whatever its size (one ``os.urandom`` for the
random bits, strided slice assignments into a template, one ``str.split``), so each id
costs about one ``str`` (``uuid.uuid4()`` costs ~3 µs per id on a
small CPU, formatting each id in Python ~1 µs). A millisecond's first block is sized by how many
ids the last one took, and doubles (up to ``_MAX_BLOCK``) while a millisecond uses
its blocks up, so a slow recorder does not pay for ids it never uses. A block is made under a lock, continuing the
counter of the one before; an id is taken with ``list.pop``, which the GIL makes atomic,
so no id is ever given twice, and every id is greater than every id given before the
call began (two calls racing may return theirs in either order).
"""

from __future__ import annotations

import binascii
import os
import threading
import time

_MIN_BLOCK = 4
_MAX_BLOCK = 1024
_LINE = 37
"""Characters per id in a block's text: the id and a space."""
_RANDOM_AT = (19, 20, 21, 22, *range(24, 36))
"""Where an id's 16 random hex digits go (the first one also carries the variant)."""
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
"""Sets the variant's two bits (10) in a random hex digit, keeping its two low bits."""
_COUNTERS = "".join(f"{c:03x}" for c in range(0x1000)).encode()
"""The 12-bit counters as three hex digits each, one after the other."""


def _block(stamp: str, first: int, count: int) -> list[str]:
    """``count`` ids of the millisecond ``stamp`` (12 hex digits) with the counters
    ``first``, ``first + 1``, ..., each with 62 fresh random bits; LAST id first (for pop)."""
    # The block's text is built by strided slice assignments into a template, each one
    # C call for the whole block, and split into ids once: one str made per id.
    text = bytearray(f"{stamp[:8]}-{stamp[8:]}-7000-0000-000000000000 ".encode() * count)
    digits = binascii.hexlify(os.urandom(8 * count))
    for i, at in enumerate(_RANDOM_AT):
        text[at::_LINE] = digits[i::16]
    text[19::_LINE] = text[19::_LINE].translate(_VARIANT)
    counters = _COUNTERS[3 * first : 3 * (first + count)]
    text[15::_LINE] = counters[0::3]
    text[16::_LINE] = counters[1::3]
    text[17::_LINE] = counters[2::3]
    ids = text.decode("ascii").split()
    ids.reverse()
    return ids


class IdClock:
    """Makes ascending UUIDv7 strings; one per buffer, safe to share between threads."""

    def __init__(self) -> None:
        self._ms = -1
        """The millisecond of the current block (may run ahead of the clock: see ``_refill``)."""
        self._counter = 0
        """The counter of the next block's first id."""
        self._size = _MIN_BLOCK
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        """One new id for a record made at ``now`` (Unix seconds), greater than every id
        this clock made before."""
        if now * 1000 < self._ms + 1:  # within the current block's millisecond (or behind it)
            try:
                return self._ids.pop()
            except IndexError:
                pass
        return self._refill(int(now * 1000))

    def _refill(self, ms: int) -> str:
        with self._lock:
            if ms > self._ms:
                # A new millisecond: its counter starts at 0. Its first block is sized
                # by how many ids the last millisecond took (a steady rate then makes one
                # block per millisecond, and leaves few ids unused).
                used = self._counter - len(self._ids)
                self._size = min(_MAX_BLOCK, max(_MIN_BLOCK, used + (used >> 2)))
                self._ms, self._counter = ms, 0
            elif self._ids:
                return self._ids.pop()  # another thread refilled it meanwhile
            else:
                self._size = min(_MAX_BLOCK, self._size * 2)
                if self._counter > 0xFFF:
                    # The millisecond ran out of counter values: continue into the next
                    # one (RFC 9562 method 1), ahead of the clock for a moment.
                    self._ms, self._counter = self._ms + 1, 0
            count = min(self._size, 0x1000 - self._counter)
            ids = _block(f"{self._ms:012x}", self._counter, count)
            self._counter += count
            uid = ids.pop()
            self._ids = ids
            return uid

    def take(self, n: int, now: float | None = None) -> list[str]:
        """``n`` new ids, each greater than every id this clock made before."""
        when = time.time() if now is None else now
        return [self.next(when) for _ in range(n)]


def sample_key(uid: str) -> int:
    """32 random bits of a record's UUID (its last 8 hex digits): ``sample_rate`` keeps a
    record when this is below ``rate * 2**32``, so the decision is a function of the id."""
    return int(uid[-8:], 16)
