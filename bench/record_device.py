"""The device side of the record-rate and per-prediction telemetry benchmarks, in a process
of its own, run as a script (``python bench/record_device.py KIND SPEC``), for the reason
``bench/sync_device.py`` gives: a device's process holds runtime, telemetry and numpy, not
the benchmark's heap of trained models with pandas, scikit-learn and MLflow, whose garbage
collections and cache footprint would be charged to every record.

KIND is ``record`` (``Buffer.record`` against SQLite alone inserting the same rows) or
``overhead`` (``predict(dict)`` of a bundle with and without telemetry); SPEC is a JSON file
of the arguments. The script prints one JSON line of raw timings, and the modules of the
benchmark's process that it found loaded (none is expected); ``bench.buffering`` turns the
timings into figures.

The benchmark imports ``fill`` and ``discard`` from here too, so this module imports the
standard library only at its top.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any

FAKE_SHA = "0" * 64
RAW_BATCH = 1_000
"""Records per transaction of the one-row-per-record ceiling."""
CHUNK = 1_000
"""Records per chunk row of the chunked ceiling (a commit group)."""
POWER = 'Buffer.record durability="power"'
PROCESS = 'Buffer.record durability="process"'
RAW = "raw sqlite3 executemany"
CHUNK_RAW = "raw sqlite3 chunk inserts"
WITHOUT = "predict(dict) without telemetry"
WITH = "predict(dict) with telemetry"
HEAVY = ("pandas", "sklearn", "mlflow", "skl2onnx", "scipy")
"""Modules a device process does not hold; found loaded, the figures are not a device's."""


def fill(buffer: Any, model: str, rows: list[dict[str, Any]], outputs: list[dict[str, Any]], count: int) -> None:
    """``count`` calls of ``buffer.record``, the rows and outputs cycled."""
    record = buffer.record
    size = len(rows)
    for i in range(count):
        record(model=model, version="1", bundle_sha256=FAKE_SHA, inputs=rows[i % size], outputs=outputs[i % size], flags=[])


def discard(path: Path) -> None:
    """Delete a measured database with its WAL and side files right away: left behind, a
    round's ~40 MB of dirty pages are written back while the next round (or the sync
    measurement) runs, and its fsyncs wait behind them."""
    for suffix in ("", "-wal", "-shm", "-lock", "-journal", "-ledger"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _raw_rows(rows: list[dict[str, Any]], outputs: list[dict[str, Any]], count: int) -> list[tuple[Any, ...]]:
    """The rows the ceilings insert, built before their clocks start: a UUID, a timestamp, the
    values as one MessagePack blob (the buffer's own encoding, ``telemetry.encoding.pack``)."""
    from telemetry.encoding import pack

    size = len(rows)
    now = time.time()
    prepared = []
    for i in range(count):
        blob = pack(tuple(rows[i % size].values()), outputs[i % size], ())
        prepared.append((str(uuid.uuid4()), now, 1, blob, len(blob)))
    return prepared


def _connect(path: Path, table: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(table)
    return connection


def _raw_insert(path: Path, prepared: list[tuple[Any, ...]]) -> None:
    """The ceiling of the old layout: SQLite's own cost for the same rows. One connection,
    one row per record, WAL + synchronous=FULL, ``executemany`` of 1,000 pre-encoded rows
    per transaction; nothing else (no queue, no thread, no accounting)."""
    connection = _connect(
        path,
        "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, ts REAL NOT NULL,"
        " context INTEGER NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL)",
    )
    try:
        for begin in range(0, len(prepared), RAW_BATCH):
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO records (uuid, ts, context, payload, size) VALUES (?,?,?,?,?)", prepared[begin : begin + RAW_BATCH]
            )
            connection.execute("COMMIT")
    finally:
        connection.close()


def _raw_chunks(prepared: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same records as the buffer stores them (``telemetry.chunks``): one row per
    ``CHUNK`` records with their ids, timestamps and payloads joined, built before the clock."""
    from telemetry.chunks import encode_payload

    out = []
    for first in range(0, len(prepared), CHUNK):
        part = prepared[first : first + CHUNK]
        out.append((first + 1, 1, len(part), "".join(r[0] for r in part), struct.pack(f"<{len(part)}d", *(r[1] for r in part)),
                    encode_payload([r[3] for r in part]), sum(r[4] for r in part)))
    return out


def _raw_chunk_insert(path: Path, chunks: list[tuple[Any, ...]]) -> None:
    """The ceiling of the chunked layout: SQLite alone inserting the pre-built chunk rows,
    one transaction per chunk (what a commit group is), WAL + synchronous=FULL."""
    connection = _connect(
        path,
        "CREATE TABLE chunks (id INTEGER PRIMARY KEY, context INTEGER NOT NULL, count INTEGER NOT NULL,"
        " gone INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL, ids TEXT NOT NULL, ts BLOB NOT NULL, payload BLOB NOT NULL)",
    )
    try:
        for chunk in chunks:
            connection.execute("BEGIN")
            connection.execute("INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES (?,?,?,?,?,?,?)", chunk)
            connection.execute("COMMIT")
    finally:
        connection.close()


def record_rate(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per round of each path (``count`` records), each round a fresh database per
    path, the paths' order rotating."""
    import telemetry

    workdir, count, model = Path(spec["workdir"]), spec["count"], spec["model"]
    rows, outputs = spec["rows"], spec["outputs"]
    seconds: dict[str, list[float]] = {POWER: [], PROCESS: [], RAW: [], CHUNK_RAW: []}
    errors: dict[str, str] = {}
    counter = iter(range(1_000_000))

    def buffered(durability: str) -> float:
        path = workdir / f"record-{durability}-{next(counter)}.db"
        buffer = telemetry.Buffer(path, durability=durability)
        try:
            start = time.perf_counter()
            fill(buffer, model, rows, outputs, count)
            buffer.flush()
            elapsed = time.perf_counter() - start
            pending = buffer.pending()
        finally:
            buffer.close()
            discard(path)
        if pending != count:
            raise RuntimeError(f"buffer holds {pending} records after flush, expected {count}")
        return elapsed

    prepared = _raw_rows(rows, outputs, count)
    chunked = _raw_chunks(prepared)

    def timed(name: str, insert: Any, what: Any) -> float:
        path = workdir / f"record-{name}-{next(counter)}.db"
        start = time.perf_counter()
        try:
            insert(path, what)
            return time.perf_counter() - start
        finally:
            discard(path)

    runs = {
        POWER: lambda: buffered("power"),
        PROCESS: lambda: buffered("process"),
        RAW: lambda: timed("raw", _raw_insert, prepared),
        CHUNK_RAW: lambda: timed("chunks", _raw_chunk_insert, chunked),
    }
    order = list(runs)
    for round_index in range(spec["rounds"]):
        shift = round_index % len(order)
        for name in order[shift:] + order[:shift]:
            if name in errors:
                continue
            try:
                seconds[name].append(runs[name]())
            except Exception as exc:  # noqa: BLE001 - reported in the table
                errors[name] = f"{type(exc).__name__}: {exc}"
    return {"seconds": seconds, "errors": errors}


def overhead(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-call seconds of ``predict(dict)`` with and without ``telemetry=Buffer(durability="power")``:
    single calls interleaved, and blocks of ``block`` predictions (followed by ``flush()``
    with telemetry, so the writer thread's work is paid too; each flush's wait is kept
    as well: a fixed cost per block, not per prediction, which a device recording
    continuously never waits for)."""
    import itertools

    import runtime
    import telemetry

    # Run as a script, this file's folder is first on sys.path: the benchmark's round-robin
    # timing without the benchmark package (whose __init__ imports pandas).
    from timing import interleave

    buffer = telemetry.Buffer(spec["db"], durability="power")
    try:
        plain = runtime.load(spec["bundle"], threads=1)
        recorded = runtime.load(spec["bundle"], threads=1, telemetry=buffer)
        rows = spec["rows"]
        a, b = itertools.cycle(rows), itertools.cycle(rows)
        single = interleave(
            {WITHOUT: lambda: plain.predict(next(a)), WITH: lambda: recorded.predict(next(b))},
            rounds=spec["rounds"],
            calls=spec["calls"],
            warmup=spec["warmup"],
        )
        buffer.flush()
        block = spec["block"]
        batch = (rows * (block // len(rows) + 1))[:block]
        flush = buffer.flush

        def without_block() -> None:
            for row in batch:
                plain.predict(row)

        flushes: list[float] = []
        clock = time.perf_counter

        def with_block() -> None:
            for row in batch:
                recorded.predict(row)
            started = clock()
            flush()
            flushes.append(clock() - started)

        blocks = interleave({WITHOUT: without_block, WITH: with_block}, rounds=spec["block_rounds"], calls=1, warmup=1)
    finally:
        buffer.close()
    result: dict[str, Any] = {
        name: {"rounds": timings.rounds, "errors": {path: f"{type(exc).__name__}: {exc}" for path, exc in timings.errors.items()}}
        for name, timings in (("single", single), ("blocks", blocks))
    }
    result["flush_seconds"] = flushes[1:]  # the first is the warm-up block's
    return result


KINDS = {"record": record_rate, "overhead": overhead}


def main(argv: list[str]) -> int:
    kind, spec_path = argv
    result = KINDS[kind](json.loads(Path(spec_path).read_text()))
    result["heavy_modules"] = [name for name in HEAVY if name in sys.modules]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
