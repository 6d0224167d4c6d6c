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

Made on the recording thread, so their cost is paid per record: ``next`` is one
``next()`` of the current millisecond's counter (an ``itertools.count``, atomic under the
GIL) and one string of three parts: the millisecond's text, the counter, and a random
tail from a pool made 1024 at a time in a fixed number of C calls (one ``getrandbits``, strided
slice assignments into a template, one ``str.split``). Nothing is made per millisecond
but its text, so a recorder pays the same per id at 30 records per millisecond as at
3,000 (a block of ids made ahead for each millisecond cost ~1 µs per id at 30 in a
prediction loop, where every block is made with cold caches; ``uuid.uuid4()`` costs
~3 µs per id on a small CPU). A new millisecond (or a counter run out) is taken under a
lock, re-checked there, so no two threads start the same millisecond (a new millisecond
makes its text, a counter and a tuple of the three); tails are popped without the lock
(``list.pop`` is atomic) and the pool is refilled under it. So no millisecond and counter
are ever given twice, and every id is greater than every id given before the call
began (two calls racing may return theirs in either order).

The random bits come from a Mersenne Twister of this module's own (``random.Random``),
seeded from ``os.urandom`` at import and again in every forked child, not from
``os.urandom`` per pool. ``os.urandom`` gives the GIL up for its system call, and the
recording thread then takes it straight back: done every 1024 records (every few
milliseconds in a busy loop), that resets the interpreter's switch timer of a thread
waiting for the GIL, so the buffer's writer waited 20-100 ms for it instead of the 5 ms
switch interval and fell behind by whole commits. The bits need to be unique, not
secret (an id is returned to the application and sent home in the clear); an own
instance, not ``random``'s global one, so that an application seeding ``random`` for
reproducibility does not repeat the ids or the sampling of its last run.
"""

from __future__ import annotations

import binascii
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Iterator

_random = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_random.seed)  # a child must not repeat its parent's bits

_POOL_TAILS = 1024
"""Random tails made at once (one ``getrandbits`` call, a fixed number of C calls)."""
_TAIL = b"-0000-000000000000 "
"""A tail's template: the variant digit and 15 random digits go where the zeros are."""
_RANDOM_AT = (1, 2, 3, 4, *range(6, 18))
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
"""Sets the variant's two bits (10) in a random hex digit, keeping its two low bits."""
COUNTER_GROUPS = tuple(f"7{c:03x}" for c in range(0x1000))
"""The third group of an id: the version digit 7 and the 12-bit counter."""


def _tails(count: int) -> list[str]:
    """``count`` random id tails, ``-vrrr-rrrrrrrrrrrr`` (the variant and 62 random bits)."""
    # Strided slice assignments into a template, each one C call for all the tails, and
    # one split: one str made per tail, whatever the count.
    text = bytearray(_TAIL * count)
    digits = binascii.hexlify(_random.getrandbits(64 * count).to_bytes(8 * count, "little"))
    step = len(_TAIL)
    for i, at in enumerate(_RANDOM_AT):
        text[at::step] = digits[i::16]
    text[1::step] = text[1::step].translate(_VARIANT)
    return text.decode("ascii").split()


class IdClock:
    """Makes ascending UUIDv7 strings; one per buffer, safe to share between threads."""

    def __init__(self) -> None:
        self._now: tuple[float, str, Iterator[int]] = (-math.inf, "", itertools.count())
        """The current millisecond: (its end, in Unix milliseconds; its text as the first two
        groups of an id, ``tttttttt-tttt-``; its counter). One tuple, read once per id, so a
        thread never pairs one millisecond's text with another's counter. Its end may run
        ahead of the clock (a counter run out, a clock set back)."""
        self._tails: list[str] = []
        """Random tails not used yet; refilled in place, so ``pop`` may be bound once."""
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        """One new id for a record made at ``now`` (Unix seconds), greater than every id
        this clock made before."""
        end, head, counter = self._now
        if now * 1000 < end:  # within the current millisecond (or behind it)
            count = next(counter)
            if count < 0x1000:
                try:
                    return f"{head}{COUNTER_GROUPS[count]}{self._tails.pop()}"  # one BUILD_STRING: cheaper than two +
                except IndexError:
                    return f"{head}{COUNTER_GROUPS[count]}{self.tail()}"
        return self.advance(now)

    def advance(self, now: float) -> str:
        """``next`` under the lock, when the current millisecond looks over: the clock's
        millisecond if it is later; else the current one while its counter lasts (another
        thread moved on meanwhile, or the clock is behind), then the one after it."""
        with self._lock:
            end, head, counter = self._now
            ms = int(now * 1000)
            if ms < end:
                count = next(counter)  # another thread moved on meanwhile, or the clock is behind
                if count < 0x1000:
                    return f"{head}{COUNTER_GROUPS[count]}{self._tail()}"
                ms = int(end)  # run out: continue in the next millisecond, ahead of the clock
            stamp = f"{ms:012x}"
            head = f"{stamp[:8]}-{stamp[8:]}-"
            self._now = (ms + 1, head, itertools.count(1))
            return f"{head}{COUNTER_GROUPS[0]}{self._tail()}"

    def tail(self) -> str:
        """One random tail, refilling the pool when it is empty."""
        with self._lock:
            return self._tail()

    def _tail(self) -> str:
        # The fast paths pop without the lock, so other threads may empty the pool between
        # the refill and the pop here: refill until a pop succeeds.
        tails = self._tails
        while True:
            try:
                return tails.pop()
            except IndexError:
                tails.extend(_tails(_POOL_TAILS))  # in place: callers may hold ``tails.pop``

    def take(self, n: int, now: float | None = None) -> list[str]:
        """``n`` new ids, each greater than every id this clock made before."""
        when = time.time() if now is None else now
        return [self.next(when) for _ in range(n)]


def sample_key(uid: str) -> int:
    """32 random bits of a record's UUID (its last 8 hex digits): ``sample_rate`` keeps a
    record when this is below ``rate * 2**32``, so the decision is a function of the id."""
    return int(uid[-8:], 16)
