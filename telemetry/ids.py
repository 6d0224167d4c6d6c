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
is two concatenations per id run by ``map`` in C: the millisecond's text and counter,
then a random tail from a pool made 1024 at a time in a fixed number of C calls (one
``os.urandom``, strided slice assignments into a template, one ``str.split``)
(``uuid.uuid4()`` costs ~3 µs per id on a small CPU, formatting each id in Python ~1 µs). A millisecond's first block is sized by how many ids
the last one took (one id, made alone, after a millisecond that took one), and blocks
double (up to ``_MAX_BLOCK``) while a millisecond uses them up, so a slow recorder does
not pay for ids it never uses. A block is made under a lock, continuing the
counter of the one before; an id is taken with ``list.pop``, which the GIL makes atomic,
so no id is ever given twice, and every id is greater than every id given before the
call began (two calls racing may return theirs in either order).
"""

from __future__ import annotations

import binascii
import os
import threading
import time
from operator import add

_MIN_BLOCK = 4
_MAX_BLOCK = 1024
_POOL_TAILS = 1024
"""Random tails made at once (one ``os.urandom`` call, a fixed number of C calls)."""
_TAIL = b"-0000-000000000000 "
"""A tail's template: the variant digit and 15 random digits go where the zeros are."""
_RANDOM_AT = (1, 2, 3, 4, *range(6, 18))
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
"""Sets the variant's two bits (10) in a random hex digit, keeping its two low bits."""
_COUNTERS = tuple(f"7{c:03x}" for c in range(0x1000))
"""The third group of an id: the version digit 7 and the 12-bit counter."""


def _tails(count: int) -> list[str]:
    """``count`` random id tails, ``-vrrr-rrrrrrrrrrrr`` (the variant and 62 random bits)."""
    # Strided slice assignments into a template, each one C call for all the tails, and
    # one split: one str made per tail, whatever the count.
    text = bytearray(_TAIL * count)
    digits = binascii.hexlify(os.urandom(8 * count))
    step = len(_TAIL)
    for i, at in enumerate(_RANDOM_AT):
        text[at::step] = digits[i::16]
    text[1::step] = text[1::step].translate(_VARIANT)
    return text.decode("ascii").split()


_STRIDED_FROM = 64
"""Blocks of at least this many ids are made whole by ``_block``; smaller ones from the
pool of tails (``_block``'s fixed cost, ~20 C calls, would dominate them)."""
_LINE = 37
_ID_RANDOM_AT = (19, 20, 21, 22, *range(24, 36))
_ID_COUNTERS = "".join(f"{c:03x}" for c in range(0x1000)).encode()


def _block(head: str, first: int, count: int) -> list[str]:
    """``count`` ids after ``head`` (``tttttttt-tttt-``) with the counters ``first``,
    ``first + 1``, ... and fresh random bits, LAST first (for pop): built like ``_tails``,
    the whole id at once, so one str is made per id."""
    text = bytearray(f"{head}7000-0000-000000000000 ".encode() * count)
    digits = binascii.hexlify(os.urandom(8 * count))
    for i, at in enumerate(_ID_RANDOM_AT):
        text[at::_LINE] = digits[i::16]
    text[19::_LINE] = text[19::_LINE].translate(_VARIANT)
    counters = _ID_COUNTERS[3 * first : 3 * (first + count)]
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
        """The current millisecond (may run ahead of the clock: see ``_refill``)."""
        self._counter = 0
        """The counter of the next id made in ``_refill``."""
        self._head = ""
        """The current millisecond as the first two groups of an id, ``tttttttt-tttt-``."""
        self._size = _MIN_BLOCK
        self._ids: list[str] = []
        """The current block, LAST id first: ``next`` pops from it."""
        self._tails: list[str] = []
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        """One new id for a record made at ``now`` (Unix seconds), greater than every id
        this clock made before."""
        if now * 1000 < self._ms + 1:  # within the current millisecond (or behind it)
            try:
                return self._ids.pop()
            except IndexError:
                pass
        return self._refill(int(now * 1000))

    def _refill(self, ms: int) -> str:
        with self._lock:
            if ms > self._ms:
                # A new millisecond: its counter starts at 0, and its first block is sized
                # by what the last millisecond took (a slow recorder's: one id, made alone;
                # one recording every 30 µs: a block of ~40 at once, not one id and then a
                # block: this runs on the recording thread, a few µs each time).
                used = self._counter - len(self._ids)
                self._ms, self._counter, self._ids = ms, 0, []
                stamp = f"{ms:012x}"
                self._head = f"{stamp[:8]}-{stamp[8:]}-"
                if used <= 1:
                    self._size = _MIN_BLOCK
                    self._counter = 1
                    tails = self._tails
                    if not tails:
                        tails = self._tails = _tails(_POOL_TAILS)
                    return self._head + _COUNTERS[0] + tails.pop()
                self._size = min(_MAX_BLOCK, used + (used >> 2))
            elif self._ids:
                return self._ids.pop()  # another thread made a block meanwhile
            if self._counter > 0xFFF:
                # The millisecond ran out of counter values: continue into the next one
                # (RFC 9562 method 1), ahead of the clock for a moment.
                self._ms, self._counter = self._ms + 1, 0
                stamp = f"{self._ms:012x}"
                self._head = f"{stamp[:8]}-{stamp[8:]}-"
            elif self._counter > 0:
                self._size = min(_MAX_BLOCK, max(_MIN_BLOCK, self._size * 2))  # the last block was used up
            count = min(self._size, 0x1000 - self._counter)
            first = self._counter
            if count >= _STRIDED_FROM:
                ids = _block(self._head, first, count)  # one str per id
            else:
                # Two concatenations per id, both run by map in C.
                ids = list(map(add, map(self._head.__add__, _COUNTERS[first : first + count]), self._take_tails(count)))
                ids.reverse()
            self._counter += count
            uid = ids.pop()
            self._ids = ids
            return uid

    def _take_tails(self, count: int) -> list[str]:
        tails = self._tails
        if len(tails) < count:
            tails = self._tails = _tails(max(_POOL_TAILS, count))
        taken = tails[-count:]
        del tails[-count:]
        return taken

    def take(self, n: int, now: float | None = None) -> list[str]:
        """``n`` new ids, each greater than every id this clock made before."""
        when = time.time() if now is None else now
        return [self.next(when) for _ in range(n)]


def sample_key(uid: str) -> int:
    """32 random bits of a record's UUID (its last 8 hex digits): ``sample_rate`` keeps a
    record when this is below ``rate * 2**32``, so the decision is a function of the id."""
    return int(uid[-8:], 16)
