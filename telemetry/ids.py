"""Record ids: time-ordered UUIDs (RFC 9562 version 7), made in groups by the buffer's writer.

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
import time


class IdClock:
    """Makes ascending UUIDv7 strings; one per buffer, used by its writer thread only."""

    def __init__(self) -> None:
        self._ms = -1
        self._counter = -1

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
