"""How fast the machine is right now: one fixed workload, timed before each section.

On a shared VM the same code measures up to half slower from one quarter of an hour to
the next (another tenant, the host reclaiming memory), and the slowdown reaches every section
at once. A figure that misses its target beside a probe twice its usual time says "the
machine", not "the code". The workload is what the telemetry path and the collector do
most: Python bytecode building small dicts and lists, their JSON text, and allocation;
nothing that touches the disk, whose speed the figures report on their own.
"""

from __future__ import annotations

import json
import statistics
import time

ROUNDS = 5
ROWS = 2_000


def _workload() -> int:
    total = 0
    for i in range(ROWS):
        row = {f"f{j}": i * 0.5 + j for j in range(16)}
        row["name"] = f"row-{i}"
        total += len(json.dumps(row, sort_keys=True)) + len([value for value in row.values() if value])
    return total


def probe_ms() -> float:
    """The median of ``ROUNDS`` timings of the workload, in milliseconds (about 20 ms on
    the 2-core VMs of docs/benchmarks.md; a larger figure is a slower machine)."""
    timings = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        _workload()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000
