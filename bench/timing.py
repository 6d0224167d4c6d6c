"""Round-robin timing: every compared path runs in every round, so machine noise hits all alike."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Per-call times of each path that ran, and the error of each path that failed."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)


def interleave(
    paths: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    calls: int,
    warmup: int,
) -> Timings:
    """Time ``calls`` calls of each path per round for ``rounds`` rounds, after ``warmup`` untimed
    calls each. Each call is timed on its own. The order of paths rotates every round so that no
    path always runs right after the same neighbour. A path that raises is dropped from the
    rotation and its error kept; the others go on."""
    timings = Timings()
    live: dict[str, Callable[[], object]] = {}
    for name, fn in paths.items():
        try:
            for _ in range(warmup):
                fn()
        except Exception as exc:  # noqa: BLE001 - any failure is reported in the table
            timings.errors[name] = exc
        else:
            live[name] = fn
            timings.seconds[name] = []
    order = list(live)
    clock = time.perf_counter
    # A collection in the middle of one path's block would be charged to that path alone.
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
                sink = timings.seconds[name]
                try:
                    for _ in range(calls):
                        start = clock()
                        fn()
                        sink.append(clock() - start)
                except Exception as exc:  # noqa: BLE001
                    timings.errors[name] = exc
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in timings.errors:
        timings.seconds.pop(name, None)
    return timings
