"""Telemetry costs: ``Buffer.record`` rate against raw batched sqlite3 inserts of the same rows,
end-to-end sync to a real collector on loopback, and the extra cost per prediction."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .errors import BenchError
from .figures import Figure, error_figure, set_ratios, summarize, timing_figure
from .inference import native_rows
from .options import BenchOptions
from .timing import Timings, cpu_seconds, interleave
from .zoo import ModelCase

POWER = 'Buffer.record durability="power"'
PROCESS = 'Buffer.record durability="process"'
RAW = "raw sqlite3 executemany"
CHUNK_RAW = "raw sqlite3 chunk inserts"
CHUNK = 1_000
SYNC = "SyncService.sync_once to collector"
WITHOUT = "predict(dict) without telemetry"
WITH = "predict(dict) with telemetry"
OVERHEAD = "telemetry cost per prediction (caller)"
OVERHEAD_ALL_IN = "telemetry cost per prediction (all in)"
RAW_BATCH = 1_000
START_TIMEOUT = 60.0
FAKE_SHA = "0" * 64


def _record_rows(case: ModelCase, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input rows of the case (cycled up to ``count``) and a matching output for each."""
    rows = native_rows(case.frame, min(count, len(case.frame)))
    outputs = [{"prediction": i % 3, "probabilities": {"0": 0.2, "1": 0.5, "2": 0.3}} for i in range(len(rows))]
    return rows, outputs


def _fill(buffer: Any, case: ModelCase, rows: list[dict[str, Any]], outputs: list[dict[str, Any]], count: int) -> None:
    record = buffer.record
    size = len(rows)
    for i in range(count):
        record(model=case.registered_name or case.name, version="1", bundle_sha256=FAKE_SHA, inputs=rows[i % size], outputs=outputs[i % size], flags=[])


def _raw_rows(case: ModelCase, rows: list[dict[str, Any]], outputs: list[dict[str, Any]], count: int) -> list[tuple[Any, ...]]:
    """The rows the ceiling inserts, built before its clock starts: a UUID, a timestamp, the
    values as one MessagePack blob (the buffer's own on-disk encoding, ``telemetry.encoding.pack``)."""
    from telemetry.encoding import pack

    size = len(rows)
    now = time.time()
    prepared = []
    for i in range(count):
        blob = pack(tuple(rows[i % size].values()), outputs[i % size], ())
        prepared.append((str(uuid.uuid4()), now, 1, blob, len(blob)))
    return prepared


def _raw_insert(path: Path, prepared: list[tuple[Any, ...]]) -> None:
    """The ceiling: SQLite's own cost for the same rows. One connection, the buffer's table
    layout, WAL + synchronous=FULL, ``executemany`` of 1,000 pre-encoded rows per
    transaction; nothing else (no queue, no thread, no accounting)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, ts REAL NOT NULL,"
            " context INTEGER NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL)"
        )
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
    import struct

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
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, context INTEGER NOT NULL, count INTEGER NOT NULL,"
            " gone INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL, ids TEXT NOT NULL, ts BLOB NOT NULL, payload BLOB NOT NULL)"
        )
        for chunk in chunks:
            connection.execute("BEGIN")
            connection.execute("INSERT INTO chunks (id, context, count, ids, ts, payload, size) VALUES (?,?,?,?,?,?,?)", chunk)
            connection.execute("COMMIT")
    finally:
        connection.close()


def _discard(path: Path) -> None:
    """Delete a measured database with its WAL and side files right away: left behind, a
    round's ~40 MB of dirty pages are written back while the next round (or the sync
    measurement) runs, and its fsyncs wait behind them."""
    for suffix in ("", "-wal", "-shm", "-lock", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def measure_record_rate(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Records per second, each round a fresh database per path, paths alternating."""
    import telemetry

    count = options.record_count
    rows, outputs = _record_rows(case, count)
    seconds: dict[str, list[float]] = {POWER: [], PROCESS: [], RAW: [], CHUNK_RAW: []}
    errors: dict[str, str] = {}
    if not hasattr(telemetry, "Buffer"):
        errors[POWER] = errors[PROCESS] = "n/a (not available: telemetry.Buffer)"
    counter = iter(range(1_000_000))

    def buffered(durability: str) -> float:
        path = workdir / f"record-{durability}-{next(counter)}.db"
        buffer = telemetry.Buffer(path, durability=durability)
        try:
            start = time.perf_counter()
            _fill(buffer, case, rows, outputs, count)
            buffer.flush()
            elapsed = time.perf_counter() - start
            pending = buffer.pending()
        finally:
            buffer.close()
            _discard(path)
        if pending != count:
            raise BenchError(f"buffer holds {pending} records after flush, expected {count}")
        return elapsed

    prepared = _raw_rows(case, rows, outputs, count)

    def raw() -> float:
        path = workdir / f"record-raw-{next(counter)}.db"
        start = time.perf_counter()
        try:
            _raw_insert(path, prepared)
            return time.perf_counter() - start
        finally:
            _discard(path)

    try:
        chunked = _raw_chunks(prepared)
    except Exception as exc:  # noqa: BLE001 - a tree without telemetry.chunks
        errors[CHUNK_RAW] = f"n/a ({type(exc).__name__}: {exc})"
        chunked = []

    def raw_chunks() -> float:
        path = workdir / f"record-chunks-{next(counter)}.db"
        start = time.perf_counter()
        try:
            _raw_chunk_insert(path, chunked)
            return time.perf_counter() - start
        finally:
            _discard(path)

    runs = {POWER: lambda: buffered("power"), PROCESS: lambda: buffered("process"), RAW: raw, CHUNK_RAW: raw_chunks}
    order = list(runs)
    for round_index in range(options.record_rounds):
        shift = round_index % len(order)
        for name in order[shift:] + order[:shift]:
            if name in errors:
                continue
            try:
                seconds[name].append(runs[name]())
            except Exception as exc:  # noqa: BLE001
                errors[name] = f"{type(exc).__name__}: {exc}"
    figures = []
    notes = {
        POWER: f"{count:,} records of {len(rows[0])} inputs per round, then flush(); WAL + synchronous=FULL",
        PROCESS: f"{count:,} records per round, then flush(); survives a process crash, not power loss",
        RAW: f"same rows pre-encoded (UUID, MessagePack blob), one row per record, executemany {RAW_BATCH:,} per transaction, WAL + synchronous=FULL: SQLite alone, the ceiling of the old one-row-per-record layout",
        CHUNK_RAW: f"same records pre-built as chunk rows of {CHUNK:,} (the buffer's layout), one transaction per chunk, WAL + synchronous=FULL: SQLite alone, the ceiling",
    }
    for name in (POWER, PROCESS, CHUNK_RAW, RAW):
        if name in errors or not seconds[name]:
            figures.append(error_figure(section="telemetry", path=name, unit="records/s", error=errors.get(name, "not measured")))
        else:
            figures.append(
                timing_figure(section="telemetry", path=name, seconds=seconds[name], unit="records/s", per_call_units=count, note=notes[name])
            )
    set_ratios(figures, CHUNK_RAW)
    return figures


class Collector:
    """``edgepack collector`` in a subprocess on a free loopback port, with one device token
    issued by ``edgepack token add``."""

    def __init__(self, directory: Path) -> None:
        from home.process import CollectorProcess

        directory.mkdir(parents=True, exist_ok=True)
        tokens = directory / "tokens.json"
        self.token = self._cli("token", "add", "bench-device", "--tokens", str(tokens)).strip().splitlines()[-1].strip()
        self.child = CollectorProcess(directory / "collector.db", tokens, directory / "collector.log", start_timeout=START_TIMEOUT)
        self.child.start()
        self.url = self.child.url

    @staticmethod
    def _cli(*args: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, timeout=120)
        if completed.returncode != 0:
            raise BenchError(f"edgepack {' '.join(args[:2])} failed: {completed.stderr.strip()[-300:]}")
        return completed.stdout

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the collector process has used so far."""
        assert self.child.process is not None
        return cpu_seconds(self.child.process.pid)

    def stored(self) -> int:
        response = httpx.get(f"{self.url}/v1/stats", headers={"Authorization": f"Bearer {self.token}"}, timeout=10.0)
        response.raise_for_status()
        return int(response.json()["records"])

    def stop(self) -> None:
        try:
            self.child.stop()
        finally:
            self.child.kill()


@contextmanager
def running_collector(directory: Path) -> Iterator[Collector]:
    collector = Collector(directory)
    try:
        yield collector
    finally:
        collector.stop()


SYNC_JSON = "SyncService.sync_once, JSON + gzip 1 (before)"
SYNC_PACKED_GZIP = "SyncService.sync_once, MessagePack + gzip 1"
SYNC_ONE = "SyncService.sync_once, one batch in flight"
SYNC_VARIANTS = {
    SYNC: {},  # the defaults: the MessagePack batch, zstd when zstandard is installed, 2 batches in flight
    SYNC_ONE: {"in_flight": 1},  # the same, one batch at a time (the next one read meanwhile)
    SYNC_PACKED_GZIP: {"wire": "packed", "zstd": False},
    SYNC_JSON: {"wire": "json", "zstd": False},
}
SYNC_MIN_ROUNDS = 3


def _sync_device(path: Path, collector: Collector, options: dict[str, Any]) -> dict[str, Any]:
    """Sync the buffer at ``path`` from a device process of its own (``bench/sync_device.py``)."""
    import json

    script = Path(__file__).with_name("sync_device.py")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(script), str(path), collector.url, collector.token, json.dumps(options)],
                          capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        raise BenchError(f"the device process failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_sync(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Records per second from a filled buffer to the collector's store, end to end: the
    clock runs from the first ``sync_once`` until the buffer is empty. The wire formats
    (``SYNC_VARIANTS``) alternate round by round against one collector, so they share the
    machine's state."""
    import telemetry

    if not hasattr(telemetry, "Buffer") or not hasattr(telemetry, "SyncService"):
        return [error_figure(section="telemetry", path=SYNC, unit="records/s", error="n/a (not available: telemetry.Buffer / telemetry.SyncService)")]
    count = options.sync_records
    rows, outputs = _record_rows(case, count)
    seconds: dict[str, list[float]] = {name: [] for name in SYNC_VARIANTS}
    waiting: dict[str, list[float]] = {name: [] for name in SYNC_VARIANTS}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in SYNC_VARIANTS}  # (device, collector) seconds
    errors: dict[str, str] = {}
    counter = iter(range(1_000_000))

    def one(collector: Collector, name: str) -> None:
        path = workdir / f"sync-{next(counter)}.db"
        try:
            buffer = telemetry.Buffer(path, durability="process")
            try:
                _fill(buffer, case, rows, outputs, count)
            finally:
                buffer.close()
            # The fill's pages go to disk now, not during the clock (they would
            # queue ahead of the collector's and the buffer's fsyncs).
            os.sync()
            before = collector.stored()
            collector_cpu = collector.cpu_seconds()
            measured = _sync_device(path, collector, SYNC_VARIANTS[name])
            cpu[name].append((measured["cpu"], collector.cpu_seconds() - collector_cpu))
        finally:
            _discard(path)
        arrived = collector.stored() - before
        if measured["left"] or arrived != count:
            raise BenchError(f"after sync {measured['left']} records still pending and {arrived} of {count} stored")
        seconds[name].append(measured["seconds"])
        waiting[name].append(measured["waiting"])

    order = list(SYNC_VARIANTS)
    try:
        with running_collector(workdir / "collector") as collector:
            for round_index in range(max(options.sync_rounds, SYNC_MIN_ROUNDS)):
                shift = round_index % len(order)
                for name in order[shift:] + order[:shift]:
                    if name in errors:
                        continue
                    try:
                        one(collector, name)
                    except Exception as exc:  # noqa: BLE001
                        errors[name] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        return [error_figure(section="telemetry", path=name, unit="records/s", error=exc) for name in SYNC_VARIANTS]
    try:
        import zstandard  # noqa: F401

        default = "the MessagePack batch + zstd 1 (zstandard installed)"
    except ImportError:
        default = "the MessagePack batch + gzip 1 (zstandard not installed)"
    figures = []
    for name, variant in SYNC_VARIANTS.items():
        if name in errors or not seconds[name]:
            figures.append(error_figure(section="telemetry", path=name, unit="records/s", error=errors.get(name, "not measured")))
            continue
        figures.append(
            timing_figure(
                section="telemetry",
                path=name,
                seconds=seconds[name],
                unit="records/s",
                per_call_units=count,
                note=(
                    f"{count:,} buffered records per round to `edgepack collector` on 127.0.0.1 with SyncOptions({', '.join(f'{k}={v!r}' for k, v in variant.items())})"
                    f"{': ' + default if not variant else ''}, "
                    f"until pending() == 0, stored count checked; variants alternate round by round; "
                    f"the batches waited for their answers {100 * sum(waiting[name]) / sum(seconds[name]):.0f}% of the time (summed over batches: over 100% when batches in flight overlap); "
                    f"CPU per record: device {1e6 * sum(c[0] for c in cpu[name]) / (count * len(cpu[name])):.1f} µs "
                    f"(the device process, bench/sync_device.py: telemetry and httpx only, as on a device; every thread: buffer reads, encoding, compression, HTTP), collector "
                    f"{1e6 * sum(c[1] for c in cpu[name]) / (count * len(cpu[name])):.1f} µs (its whole process)"
                ),
            )
        )
    set_ratios(figures, SYNC_JSON)
    return figures


def _paired(timings: Timings, slow: str, fast: str, *, per_call: int = 1) -> tuple[float, float, int]:
    """Median and p99 (µs) of the per-round difference between two interleaved paths, each
    round's blocks summarised by their median: pairing by round cancels slow drifts of the
    machine that a difference of overall medians would keep."""
    diffs = [
        (float(np.median(a)) - float(np.median(b))) / per_call * 1e6
        for a, b in zip(timings.rounds[slow], timings.rounds[fast])
        if a and b
    ]
    median, p99 = summarize(diffs)
    return median, p99, len(diffs)


def measure_overhead(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """What telemetry adds to ``predict(dict)`` with ``telemetry=Buffer(durability="power")``:
    on the calling thread (single calls, interleaved with calls without telemetry), and all in
    (blocks of predictions followed by ``flush()``, so the writer thread's work is paid too)."""
    import runtime
    import telemetry

    paths = (WITHOUT, WITH, OVERHEAD, OVERHEAD_ALL_IN)
    if case.bundle is None:
        reason = f"n/a (no bundle: {case.bundle_error})"
    elif not hasattr(runtime, "load"):
        reason = "n/a (not available: runtime.load)"
    elif not hasattr(telemetry, "Buffer"):
        reason = "n/a (not available: telemetry.Buffer)"
    else:
        reason = ""
    if reason:
        return [error_figure(section="telemetry", path=p, unit="us", error=reason, model=case.name) for p in paths]
    buffer = None
    block = options.overhead_block
    try:
        buffer = telemetry.Buffer(workdir / "overhead.db", durability="power")
        plain = runtime.load(str(case.bundle), threads=1)
        recorded = runtime.load(str(case.bundle), threads=1, telemetry=buffer)
        rows = native_rows(case.frame, 16)
        a, b = itertools.cycle(rows), itertools.cycle(rows)
        single = interleave(
            {WITHOUT: lambda: plain.predict(next(a)), WITH: lambda: recorded.predict(next(b))},
            rounds=options.latency_rounds * 3,
            calls=max(5, options.latency_calls // 3),
            warmup=options.latency_warmup,
        )
        buffer.flush()
        batch = rows * (block // len(rows) + 1)
        batch = batch[:block]
        flush = buffer.flush

        def without_block() -> None:
            for row in batch:
                plain.predict(row)

        def with_block() -> None:
            for row in batch:
                recorded.predict(row)
            flush()

        blocks = interleave({WITHOUT: without_block, WITH: with_block}, rounds=options.overhead_rounds, calls=1, warmup=1)
    except Exception as exc:  # noqa: BLE001
        return [error_figure(section="telemetry", path=p, unit="us", error=exc, model=case.name) for p in paths]
    finally:
        if buffer is not None:
            try:
                buffer.close()
            except Exception:  # noqa: BLE001, S110 - closing after a failure must not hide it
                pass
    figures: list[Figure] = []
    seconds = single.seconds
    for name in (WITHOUT, WITH):
        if seconds.get(name):
            figures.append(timing_figure(section="telemetry", path=name, seconds=seconds[name], unit="us", model=case.name))
        else:
            figures.append(error_figure(section="telemetry", path=name, unit="us", error=single.errors.get(name, "not measured"), model=case.name))
    set_ratios(figures, WITHOUT)
    if all(f.ok for f in figures):
        median, p99, pairs = _paired(single, WITH, WITHOUT)
        figures.append(
            Figure(
                section="telemetry",
                path=OVERHEAD,
                unit="us",
                model=case.name,
                median=median,
                p99=p99,
                samples=pairs,
                note="latency added on the calling thread: per round, median with minus median without (the writer thread's commits are not in it)",
            )
        )
    else:
        figures.append(error_figure(section="telemetry", path=OVERHEAD, unit="us", error="needs both predict figures", model=case.name))
    if WITH in blocks.rounds and WITHOUT in blocks.rounds:
        median, p99, pairs = _paired(blocks, WITH, WITHOUT, per_call=block)
        figures.append(
            Figure(
                section="telemetry",
                path=OVERHEAD_ALL_IN,
                unit="us",
                model=case.name,
                median=median,
                p99=p99,
                samples=pairs,
                note=f"per round, ({block:,} predictions with telemetry + flush()) minus ({block:,} without), divided by {block:,}: includes the writer thread's work and the commit",
            )
        )
    else:
        error = blocks.errors.get(WITH) or blocks.errors.get(WITHOUT) or "not measured"
        figures.append(error_figure(section="telemetry", path=OVERHEAD_ALL_IN, unit="us", error=error, model=case.name))
    return figures
