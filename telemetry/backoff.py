"""How long the sync service waits after a transient failure: full-jitter exponential backoff."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from .options import SyncOptions


class Backoff:
    """Consecutive transient failures (across rounds) and the waits they lead to.

    The window doubles from ``backoff_base`` up to ``backoff_cap``; the delay is a random
    point in it (full jitter spreads a fleet coming back online), or the ``Retry-After``
    the collector asked for if longer, itself bounded by the cap. ``sleep`` replaces the
    wait (tests); by default a wait ends early when the stop event is set."""

    def __init__(self, options: SyncOptions, *, sleep: Callable[[float], None] | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.options = options
        self.failures = 0
        self._sleep = sleep
        self._rng = rng

    def delay(self, retry_after: float | None) -> float:
        opts = self.options
        window = min(opts.backoff_cap, opts.backoff_base * 2 ** max(0, self.failures - 1))
        delay = self._rng() * window
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, opts.backoff_cap)

    def wait(self, delay: float, stop_event: threading.Event) -> bool:
        """Wait ``delay`` seconds; True if ``stop_event`` was set meanwhile."""
        if self._sleep is not None:
            self._sleep(delay)
            return stop_event.is_set()
        return stop_event.wait(delay)
