"""The collector process's garbage collector: tuned for batches of thousands of records.

Parsing a batch makes a few containers per record (msgspec's decoded records, one dict
of inputs each) that reference counting frees as soon as the batch is stored. CPython's
default thresholds (a young collection every 700 new containers, a full one every 100
of those) make a 1,000-record batch trigger several young collections and, every few
batches, a full one that walks every object the server holds (uvicorn, starlette,
sqlite-utils, msgspec's types...): together measured at over half of the parse's CPU.
``tune`` moves what exists at startup out of the collector's sight (``gc.freeze``) and
collects young objects every ``YOUNG`` containers instead. Reference cycles are still
collected; they are rare on this path, and a batch's garbage is freed by reference
counting either way. ``EDGEPACK_COLLECTOR_GC=default`` in the environment keeps
CPython's defaults (to compare).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 50_000
"""Containers allocated (net) between young collections."""


def tune() -> None:
    """Apply the collector's settings to this process (once the app is built)."""
    if os.environ.get("EDGEPACK_COLLECTOR_GC") == "default":
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)


@contextmanager
def tuned() -> Iterator[None]:
    """The collector's settings for a while (the benchmark measures the collector in process)."""
    before = gc.get_threshold()
    tune()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
