"""Telemetry costs: ``Buffer.record`` rate against raw batched sqlite3 inserts of the same rows,
end-to-end sync to a real collector on loopback, and the extra cost per prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from .process import SINGLE_THREAD
from .record_device import CHUNK, CHUNK_RAW, POWER, PROCESS, RAW, RAW_BATCH, WITH, WITHOUT, discard, fill
from .timing import Timings, cpu_seconds, descendants
from .zoo import ModelCase

SYNC = "SyncService.sync_once to collector"
OVERHEAD = "telemetry cost per prediction (caller)"
OVERHEAD_ALL_IN = "telemetry cost per prediction (all in)"
OVERHEAD_FLUSH = "telemetry cost per prediction: the block's final flush() (in all in)"
START_TIMEOUT = 60.0
DEVICE_NOTE = "measured in a device process (bench/record_device.py: runtime and telemetry, no pandas, scikit-learn or MLflow)"


def _record_rows(case: ModelCase, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input rows of the case (cycled up to ``count``) and a matching output for each."""
    rows = native_rows(case.frame, min(count, len(case.frame)))
    outputs = [{"prediction": i % 3, "probabilities": {"0": 0.2, "1": 0.5, "2": 0.3}} for i in range(len(rows))]
    return rows, outputs


def measure_record_rate(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Records per second, each round a fresh database per path, paths alternating, in a
    device process (``bench/record_device.py``)."""
    import telemetry

    count = options.record_count
    rows, outputs = _record_rows(case, count)
    paths = (POWER, PROCESS, CHUNK_RAW, RAW)
    if not hasattr(telemetry, "Buffer"):
        return [error_figure(section="telemetry", path=name, unit="records/s", error="n/a (not available: telemetry.Buffer)") for name in paths]
    try:
        measured = _device_process(
            "record",
            {"workdir": str(workdir), "count": count, "rounds": options.record_rounds, "model": _model(case), "rows": rows, "outputs": outputs},
            workdir,
        )
    except Exception as exc:  # noqa: BLE001
        return [error_figure(section="telemetry", path=name, unit="records/s", error=exc) for name in paths]
    seconds, errors = measured["seconds"], measured["errors"]
    figures = []
    notes = {
        POWER: f"{count:,} records of {len(rows[0])} inputs per round, then flush(); WAL + synchronous=FULL",
        PROCESS: f"{count:,} records per round, then flush(); survives a process crash, not power loss",
        RAW: f"same rows pre-encoded (UUID, MessagePack blob), one row per record, executemany {RAW_BATCH:,} per transaction, WAL + synchronous=FULL: SQLite alone, the ceiling of the old one-row-per-record layout",
        CHUNK_RAW: f"same records pre-built as chunk rows of {CHUNK:,} (the buffer's layout), one transaction per chunk, WAL + synchronous=FULL: SQLite alone, the ceiling",
    }
    for name in paths:
        if name in errors or not seconds.get(name):
            figures.append(error_figure(section="telemetry", path=name, unit="records/s", error=errors.get(name, "not measured")))
        else:
            figures.append(
                timing_figure(
                    section="telemetry", path=name, seconds=seconds[name], unit="records/s", per_call_units=count,
                    note=f"{notes[name]}; {DEVICE_NOTE}",
                )
            )
    set_ratios(figures, CHUNK_RAW)
    return figures


class Collector:
    """``edgepack collector`` in a subprocess on a free loopback port (``--workers workers``),
    with one device token issued by ``edgepack token add``."""

    def __init__(self, directory: Path, *, workers: int = 1) -> None:
        from home.process import CollectorProcess

        directory.mkdir(parents=True, exist_ok=True)
        tokens = directory / "tokens.json"
        self.token = self._cli("token", "add", "bench-device", "--tokens", str(tokens)).strip().splitlines()[-1].strip()
        options = {"workers": workers} if workers > 1 else {}
        self.child = CollectorProcess(
            directory / "collector.db", tokens, directory / "collector.log", options=options, start_timeout=START_TIMEOUT
        )
        self.child.start()
        self.url = self.child.url

    @staticmethod
    def _cli(*args: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, timeout=120)
        if completed.returncode != 0:
            raise BenchError(f"edgepack {' '.join(args[:2])} failed: {completed.stderr.strip()[-300:]}")
        return completed.stdout

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the collector's processes (its workers too) have used so far."""
        assert self.child.process is not None
        return cpu_seconds(*descendants(self.child.process.pid))

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
def running_collector(directory: Path, *, workers: int = 1) -> Iterator[Collector]:
    collector = Collector(directory, workers=workers)
    try:
        yield collector
    finally:
        collector.stop()


SYNC_JSON = "SyncService.sync_once, JSON + gzip 1 (before)"
SYNC_PACKED_GZIP = "SyncService.sync_once, MessagePack + gzip 1"
SYNC_ONE = "SyncService.sync_once, one batch in flight"
SYNC_WORKERS = "SyncService.sync_once to collector --workers 2"
SYNC_VARIANTS = {
    SYNC: {},  # the defaults: the MessagePack batch, zstd when zstandard is installed, 2 batches in flight
    SYNC_WORKERS: {},  # the same, to a collector of two worker processes (SYNC_WORKER_COUNT)
    SYNC_ONE: {"in_flight": 1},  # the same, one batch at a time (the next one read meanwhile)
    SYNC_PACKED_GZIP: {"wire": "packed", "zstd": False},
    SYNC_JSON: {"wire": "json", "zstd": False},
}
SYNC_WORKER_COUNT = {SYNC_WORKERS: 2}
"""Variants sent to a collector of several worker processes (the others: one process)."""
SYNC_MIN_ROUNDS = 3


def _run_script(script: str, *args: str) -> dict[str, Any]:
    """The JSON line a device-side script of the benchmark prints, run in a process of its own
    on one compute thread (``process.SINGLE_THREAD``), with this checkout first on its path."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *args],
                          capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0:
        raise BenchError(f"the device process ({script}) failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _device_process(kind: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``_run_script`` of ``bench/record_device.py KIND SPEC``, with ``spec`` as a JSON file;
    a result whose process held the benchmark's heavy modules is refused."""
    path = workdir / f"{kind}-spec.json"
    path.write_text(json.dumps(spec))
    measured = _run_script("record_device.py", kind, str(path))
    if measured.get("heavy_modules"):
        raise BenchError(f"the device process loaded {', '.join(measured['heavy_modules'])}: its figures would not be a device's")
    return measured


def _model(case: ModelCase) -> str:
    return case.registered_name or case.name


def _sync_device(path: Path, collector: Collector, options: dict[str, Any]) -> dict[str, Any]:
    """Sync the buffer at ``path`` from a device process of its own (``bench/sync_device.py``)."""
    return _run_script("sync_device.py", str(path), collector.url, collector.token, json.dumps(options))


def measure_sync(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Records per second from a filled buffer to the collector's store, end to end: the
    clock runs from the first ``sync_once`` until the buffer is empty. The wire formats
    (``SYNC_VARIANTS``) alternate round by round against one collector (two: one process,
    and one of two worker processes for ``SYNC_WORKER_COUNT``), so they share the
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
                fill(buffer, _model(case), rows, outputs, count)
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
            discard(path)
        arrived = collector.stored() - before
        if measured["left"] or arrived != count:
            raise BenchError(f"after sync {measured['left']} records still pending and {arrived} of {count} stored")
        seconds[name].append(measured["seconds"])
        waiting[name].append(measured["waiting"])

    order = list(SYNC_VARIANTS)
    try:
        with running_collector(workdir / "collector") as single, running_collector(workdir / "collector-workers", workers=2) as pair:
            for round_index in range(max(options.sync_rounds, SYNC_MIN_ROUNDS)):
                shift = round_index % len(order)
                for name in order[shift:] + order[:shift]:
                    if name in errors:
                        continue
                    try:
                        one(pair if name in SYNC_WORKER_COUNT else single, name)
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
                    f"{count:,} buffered records per round to `edgepack collector{f' --workers {SYNC_WORKER_COUNT[name]}' if name in SYNC_WORKER_COUNT else ''}` on 127.0.0.1 with SyncOptions({', '.join(f'{k}={v!r}' for k, v in variant.items())})"
                    f"{': ' + default if not variant else ''}, "
                    f"until pending() == 0, stored count checked; variants alternate round by round; "
                    f"the batches waited for their answers {100 * sum(waiting[name]) / sum(seconds[name]):.0f}% of the time (summed over batches: over 100% when batches in flight overlap); "
                    f"CPU per record: device {1e6 * sum(c[0] for c in cpu[name]) / (count * len(cpu[name])):.1f} µs "
                    f"(the device process, bench/sync_device.py: telemetry and httpx only, as on a device; every thread: buffer reads, encoding, compression, HTTP), collector "
                    f"{1e6 * sum(c[1] for c in cpu[name]) / (count * len(cpu[name])):.1f} µs (all its processes)"
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
    (blocks of predictions followed by ``flush()``, so the writer thread's work is paid too);
    measured in a device process (``bench/record_device.py``)."""
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
    block = options.overhead_block
    try:
        measured = _device_process(
            "overhead",
            {
                "bundle": str(case.bundle), "db": str(workdir / "overhead.db"), "rows": native_rows(case.frame, 16),
                "rounds": options.latency_rounds * 3, "calls": max(5, options.latency_calls // 3),
                "warmup": options.latency_warmup, "block": block, "block_rounds": options.overhead_rounds,
            },
            workdir,
        )
    except Exception as exc:  # noqa: BLE001
        return [error_figure(section="telemetry", path=p, unit="us", error=exc, model=case.name) for p in paths]
    single, blocks = (
        Timings(rounds=measured[name]["rounds"], errors={path: BenchError(error) for path, error in measured[name]["errors"].items()})
        for name in ("single", "blocks")
    )
    figures: list[Figure] = []
    seconds = single.seconds
    for name in (WITHOUT, WITH):
        if seconds.get(name):
            figures.append(timing_figure(section="telemetry", path=name, seconds=seconds[name], unit="us", model=case.name, note=DEVICE_NOTE))
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
                note="latency added on the calling thread: per round, median with minus median without (the writer thread's commits are not in it); " + DEVICE_NOTE,
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
                note=f"per round, ({block:,} predictions with telemetry + flush()) minus ({block:,} without), divided by {block:,}: includes the writer thread's work and the commit; " + DEVICE_NOTE,
            )
        )
        flushes = measured.get("flush_seconds") or []
        if flushes:
            median, p99 = summarize([seconds / block * 1e6 for seconds in flushes])
            figures.append(
                Figure(
                    section="telemetry",
                    path=OVERHEAD_FLUSH,
                    unit="us",
                    model=case.name,
                    median=median,
                    p99=p99,
                    samples=len(flushes),
                    note=(
                        f"the wait of each block's final flush() (the last commit, mostly its fsync), divided by {block:,}: "
                        f"a fixed cost per flush, charged here per prediction; median {float(np.median(flushes)) * 1e3:.2f} ms per flush"
                    ),
                )
            )
    else:
        error = blocks.errors.get(WITH) or blocks.errors.get(WITHOUT) or "not measured"
        figures.append(error_figure(section="telemetry", path=OVERHEAD_ALL_IN, unit="us", error=error, model=case.name))
    return figures
