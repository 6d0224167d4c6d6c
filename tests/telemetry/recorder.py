"""Child process for crash tests: records forever, printing each acknowledged sequence.

``python -m tests.telemetry.recorder DB FIRST_SEQ DURABILITY SEED``: prints ``ready``,
then repeatedly records a random number of records and flushes; after each flush it
prints the last sequence number recorded, so every number up to it is acknowledged.
"""

from __future__ import annotations

import random
import sys

import telemetry

from .records import record


def main() -> None:
    path, first, durability, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    buffer = telemetry.Buffer(path, durability=durability, group_size=rng.choice([1, 16, 200]), group_delay=0.002)
    print("ready", flush=True)
    seq = first
    while True:
        end = seq + rng.randint(1, 60)
        for number in range(seq, end):
            record(buffer, number)
        buffer.flush()
        print(end - 1, flush=True)
        seq = end


if __name__ == "__main__":
    main()
