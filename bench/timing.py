"""Round-robin timing: every compared path runs in every round, so machine noise hits all alike."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def cpu_seconds(*pids: int) -> float:
    """CPU time (user + system) the processes ``pids`` have used so far; ended ones count 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (a supervisor's workers, a server's backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


WARMUP_CAP = 1.0
"""Seconds after which a path's warm-up stops even if it made fewer than ``warmup`` calls."""


@dataclass
class Timings:
    """Per-call times of each path that ran, and the error of each path that failed."""

    rounds: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per path, one list of per-call seconds per round (paired comparisons use these)."""
    errors: dict[str, BaseException] = field(default_factory=dict)

    @property
    def seconds(self) -> dict[str, list[float]]:
        """Per path, every per-call time of every round."""
        return {name: [s for block in blocks for s in block] for name, blocks in self.rounds.items()}


def interleave(
    paths: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    calls: int,
    warmup: int,
    budget: float | None = None,
) -> Timings:
    """Time up to ``calls`` calls of each path per round for ``rounds`` rounds, after ``warmup``
    untimed calls each. Each call is timed on its own. The order of paths rotates every round
    so that no path always runs right after the same neighbour. ``budget`` (seconds) ends a
    path's block early once spent, so that a path a thousand times slower than the others gets
    fewer samples instead of taking the whole run (at least one call per round). A path that
    raises is dropped from the rotation and its error kept; the others go on."""
    clock = time.perf_counter
    timings = Timings()
    live: dict[str, Callable[[], object]] = {}
    for name, fn in paths.items():
        try:
            warm_until = clock() + WARMUP_CAP
            for _ in range(warmup):
                fn()
                if clock() > warm_until:
                    break
        except Exception as exc:  # noqa: BLE001 - any failure is reported in the table
            timings.errors[name] = exc
        else:
            live[name] = fn
            timings.rounds[name] = []
    order = list(live)
    limit = float("inf") if budget is None else budget
    # A collection in the middle of one path's block would be charged to that path alone;
    # collecting between rounds charges nobody.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(rounds):
            if not order:
                break
            shift = round_index % len(order)
            for name in order[shift:] + order[:shift]:
                if name in timings.errors:
                    continue
                fn = live[name]
                block: list[float] = []
                spent = 0.0
                try:
                    for _ in range(calls):
                        start = clock()
                        fn()
                        elapsed = clock() - start
                        block.append(elapsed)
                        spent += elapsed
                        if spent >= limit:
                            break
                except Exception as exc:  # noqa: BLE001
                    timings.errors[name] = exc
                timings.rounds[name].append(block)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in timings.errors:
        timings.rounds.pop(name, None)
    return timings
