"""``edgepack export --format parquet``: the collector's records as a Hive-partitioned Parquet tree.

    DIR/model=fire-risk/version=3/date=2026-12-01/part-0000000007.parquet

Incremental and exactly once: each run claims the records no run has claimed yet
(``exportdb``), writes one file per partition it touches, named by the run, and is then
marked finished. Running the export again writes only records that arrived since; a run
interrupted by a crash or a kill is written again, under the same names, on the next
start, before anything new is claimed. Files are never appended to, so a reader sees
every file whole or not at all (``parquet.write_atomically``).

Retention (``delete_exported``) deletes from the collector's database only records that
a finished run has exported, and only those received before the cut-off.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from ..errors import ExportError
from .claims import ExportDatabase, Run
from .parquet import Typing, days_of, partition_dir, table, write_atomically

CRASH_ENV = "EDGEPACK_EXPORT_CRASH_AT"
"""Crash tests: ``claimed``, ``file:N`` (after the N-th file of a run) or ``written`` makes the
export SIGKILL itself at that point, as a power cut or an OOM kill would."""


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How an export runs."""

    run_records: int = 100_000
    """Most records one run claims, and so holds in memory while writing its files."""


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What an export did."""

    records: int
    """Records written to Parquet by this invocation (resumed runs included)."""

    files: int
    """Parquet files written."""

    bytes: int
    """Their total size."""

    runs: int
    """Runs finished (each claims at most ``run_records``)."""

    resumed: int
    """Runs an earlier, interrupted export had begun, finished now."""

    seconds: float
    """Wall time of the export."""

    deleted: int = 0
    """Records removed from the database by retention afterwards."""


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_run(database: ExportDatabase, run: Run, root: Path, manifests: dict[tuple[str, str], Any]) -> tuple[int, int, int]:
    rows = database.rows(run.run)
    files = size = 0
    days = days_of([row[4] for row in rows])
    keyed = sorted(zip(((row[5], row[6], day) for row, day in zip(rows, days)), rows), key=lambda pair: pair[0])
    for (model, version, day), group in groupby(keyed, key=lambda pair: pair[0]):
        part = [row for _, row in group]
        data = table(part, Typing(manifests.get((model, version))))
        size += write_atomically(data, partition_dir(root, model, version, day) / f"part-{run.run:010d}.parquet")
        files += 1
        _crash_point(f"file:{files}")
    return len(rows), files, size


def _remove_temporaries(root: Path) -> None:
    # What a killed run left half-written; its records are written again whole.
    for leftover in root.glob("model=*/version=*/date=*/.part-*.parquet.tmp"):
        leftover.unlink(missing_ok=True)


def export_parquet(db: str, to: Path, *, options: ExportOptions | None = None) -> ExportReport:
    """Export every record of ``db`` not exported yet into the Parquet tree at ``to``."""
    options = options or ExportOptions()
    started = time.monotonic()
    root = Path(to).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--to {to}: cannot create the directory ({exc.strerror})") from exc
    records = files = size = runs = resumed = 0
    with ExportDatabase(db) as database:
        previous = database.last_destination()
        if previous is not None and previous != str(root):
            raise ExportError(
                f"the records of {database.where} have been exported to {previous}; an export to {root} would hold only "
                f"the records that arrived since. Export to {previous} again (or move that directory to {root} first)"
            )
        _remove_temporaries(root)
        manifests = database.manifests()
        for run in database.unfinished():
            done = _write_run(database, run, root, manifests)
            records, files, size = records + done[0], files + done[1], size + done[2]
            database.finish(run.run)
            runs, resumed = runs + 1, resumed + 1
        while True:
            run = database.claim(str(root), options.run_records)
            if run is None:
                break
            _crash_point("claimed")
            done = _write_run(database, run, root, manifests)
            _crash_point("written")
            records, files, size = records + done[0], files + done[1], size + done[2]
            database.finish(run.run)
            runs += 1
    return ExportReport(
        records=records, files=files, bytes=size, runs=runs, resumed=resumed, seconds=time.monotonic() - started
    )


def delete_exported(db: str, *, older_than_seconds: float, now: float | None = None) -> int:
    """Delete the records of ``db`` received more than ``older_than_seconds`` ago that a
    finished export run holds; return how many. Records not exported are never deleted."""
    if older_than_seconds < 0:
        raise ExportError(f"the retention age must be >= 0 seconds, got {older_than_seconds:g}")
    cutoff = (time.time() if now is None else now) - older_than_seconds
    with ExportDatabase(db) as database:
        return database.delete_exported(cutoff)
