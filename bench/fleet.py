"""A fleet syncing at once: many devices, each with its own token, into one SQLite
collector, one collector on PostgreSQL and two collectors on one PostgreSQL database;
then the Parquet export of what arrived and a DuckDB scan over it.

Bounded and loopback only: every device sends a fixed number of batches and the run
stops when the last is stored (or at ``deadline`` seconds per configuration). Devices are
asyncio tasks in this process, each with its own ``httpx.AsyncClient`` (its own
connections) and token, sending gzip JSON batches shaped like the sync service's. A 503
or 429 is retried after a short jittered pause (a real device would honour Retry-After;
here the point is the collector's capacity), and counted.

Reported per configuration: aggregate records/s (stored records over the wall time from
the first send to the last answer), p50/p99 latency of the accepted batch requests,
collector CPU per record (user+system time of the collector processes) and, on
PostgreSQL, the server's CPU per record. The client runs on the same cores as the
collectors and the server: on a small machine it takes a share of the CPU, which
lowers every figure alike.

``python -m bench.fleet`` runs it alone; ``python -m bench --only fleet`` runs it in the suite.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .figures import Figure, error_figure
from .timing import cpu_seconds, descendants

SECTION = "fleet"
CONFIGS = ("sqlite, 1 collector", "postgres, 1 collector", "postgres, 2 collectors")
COLLECTOR_LIMITS = {"max_pending_batches": 64, "max_pending_per_device": 2, "max_header_connections": 4096}


@dataclass(frozen=True, kw_only=True)
class FleetOptions:
    """How big the simulated fleet is."""

    devices: int = 1000
    """Devices syncing at once, each with its own token and connections."""

    batches_per_device: int = 2
    """Batches each device sends."""

    records_per_batch: int = 100
    """Records per batch (the sync service sends up to 1,000; a quiet device fewer)."""

    deadline: float = 300.0
    """Seconds after which a configuration is cut short (reported as an error)."""

    configs: tuple[str, ...] = CONFIGS
    """Which configurations to run."""


PRESETS = {
    "smoke": FleetOptions(devices=10, batches_per_device=1, records_per_batch=5, deadline=120.0),
    "quick": FleetOptions(devices=100, batches_per_device=2, records_per_batch=50),
    "full": FleetOptions(),
}
"""Fleet sizes per ``python -m bench`` mode (smoke: structure only, the numbers mean nothing)."""


@dataclass
class Outcome:
    """What one configuration measured."""

    records: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    duplicates: int = 0
    transport_errors: dict[str, int] = field(default_factory=dict)
    collector_cpu: float = 0.0
    server_cpu: float | None = None


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_tokens(path: Path, count: int) -> dict[str, str]:
    """A tokens file for ``count`` devices at once (``edgepack token add`` rewrites the file per device)."""
    from home.tokens import FORMAT, TOKEN_PREFIX, VERSION, digest

    tokens = {f"bench-{n:05d}": TOKEN_PREFIX + secrets.token_urlsafe(32) for n in range(count)}
    now = time.time()
    document = {
        "format": FORMAT, "version": VERSION, "admins": {},
        "devices": {device: {"sha256": digest(token), "added": now} for device, token in tokens.items()},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    return tokens


def _uuid7(millis: int, rng: random.Random) -> str:
    """A time-ordered UUID (version 7), as devices make them (Python 3.11's uuid has no uuid7)."""
    value = (millis << 80) | (7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def _bodies(device: str, options: FleetOptions, rng: random.Random) -> list[bytes]:
    """The device's batches as the sync service sends them: gzip JSON, time-ordered ids."""
    sha = hashlib.sha256(b"bench bundle").hexdigest()
    bodies = []
    start = 1_790_000_000.0 + rng.random() * 86_400
    for number in range(options.batches_per_device):
        records = []
        for index in range(options.records_per_batch):
            seq = number * options.records_per_batch + index
            records.append({
                "id": _uuid7(int((start + seq * 0.5) * 1000), rng),
                "ts": start + seq * 0.5,
                "model": "fire-risk",
                "version": str(1 + seq % 2),
                "bundle_sha256": sha,
                "inputs": {"temp_c": round(rng.uniform(-10, 45), 3), "humidity": round(rng.random(), 4), "region": rng.choice(["north", "south", "east"])},
                "outputs": {"prediction": seq % 2, "probabilities": {"0": 0.3, "1": 0.7}},
                "flags": [],
            })
        document = {"batch_id": f"{device}-{number}", "records": records, "counters": {"dropped": 0, "sampled_out": 0, "dead_lettered": 0}}
        bodies.append(gzip.compress(json.dumps(document, separators=(",", ":")).encode(), 1))
    return bodies


async def _device(client: Any, url: str, token: str, bodies: list[bytes], outcome: Outcome, rng: random.Random) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with client:
        for body in bodies:
            while True:
                began = time.perf_counter()
                try:
                    response = await client.post(f"{url}/v1/batches", content=body, headers=headers)
                except httpx.TransportError as exc:
                    outcome.retries += 1
                    outcome.transport_errors[type(exc).__name__] = outcome.transport_errors.get(type(exc).__name__, 0) + 1
                    await asyncio.sleep(0.05 + rng.random() * 0.1)
                    continue
                if response.status_code == 200:
                    outcome.latencies.append(time.perf_counter() - began)
                    answer = response.json()
                    # Delivered: stored now, or by an earlier attempt whose answer was lost.
                    outcome.records += answer["accepted"] + answer["duplicates"]
                    outcome.duplicates += answer["duplicates"]
                    break
                if response.status_code in (429, 503):
                    outcome.retries += 1
                    await asyncio.sleep(0.02 + rng.random() * 0.08)
                    continue
                raise RuntimeError(f"collector answered {response.status_code}: {response.text[:200]}")


async def _fleet(urls: list[str], tokens: dict[str, str], bodies: dict[str, list[bytes]], deadline: float) -> Outcome:
    import ssl

    import httpx

    outcome = Outcome()
    rng = random.Random(17)
    # Each device has its own client (its own connections); they are made before the clock
    # starts, sharing one TLS context that plain-HTTP loopback never uses (making one per
    # client costs milliseconds each).
    context = ssl.create_default_context()
    tasks = [
        _device(httpx.AsyncClient(timeout=120.0, verify=context), urls[index % len(urls)], tokens[device], bodies[device], outcome, rng)
        for index, device in enumerate(sorted(tokens))
    ]
    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=deadline)
    outcome.seconds = time.perf_counter() - began
    return outcome


def _run_config(
    name: str, options: FleetOptions, root: Path, server: Any, tokens: dict[str, str], bodies: dict[str, list[bytes]],
    tokens_path: Path,
) -> tuple[Outcome, str]:
    from home.process import CollectorProcess

    directory = root / name.replace(", ", "-").replace(" ", "-")
    directory.mkdir()
    db_url = server.create_database("bench") if name.startswith("postgres") else None
    count = 2 if "2 collectors" in name else 1
    collectors = [
        CollectorProcess(directory / "collector.db", tokens_path, directory / f"collector-{n}.log", options=COLLECTOR_LIMITS, db_url=db_url)
        for n in range(count)
    ]
    try:
        for collector in collectors:
            collector.start()
        pids = [pid for collector in collectors if collector.process for pid in descendants(collector.process.pid)]
        postmaster = _postmaster_pid(server.data) if db_url else None
        before = cpu_seconds(*pids)
        server_before = cpu_seconds(*descendants(postmaster)) if postmaster else None
        outcome = asyncio.run(_fleet([c.url for c in collectors], tokens, bodies, options.deadline))
        outcome.collector_cpu = cpu_seconds(*pids) - before
        if postmaster is not None and server_before is not None:
            # Backends that ended during the run are missed: connections live in pools, so few do.
            outcome.server_cpu = cpu_seconds(*descendants(postmaster)) - server_before
    finally:
        for collector in collectors:
            collector.stop()
    return outcome, db_url or str(directory / "collector.db")


def _figures(name: str, outcome: Outcome) -> list[Figure]:
    latencies = np.asarray(outcome.latencies) * 1e3
    note = (
        f"{outcome.records:,} records in {outcome.seconds:.2f} s, {outcome.retries} requests retried (503/429 or a "
        f"dropped connection), {outcome.duplicates} records already stored by an attempt whose answer was lost"
    )
    if outcome.transport_errors:
        note += " (" + ", ".join(f"{count} {name}" for name, count in sorted(outcome.transport_errors.items())) + ")"
    figures = [
        Figure(section=SECTION, path=f"{name}: ingest", unit="records/s", median=outcome.records / outcome.seconds,
               p99=outcome.records / outcome.seconds, samples=1, note=note),
        Figure(section=SECTION, path=f"{name}: batch latency", unit="ms", median=float(np.median(latencies)),
               p99=float(np.percentile(latencies, 99)), samples=len(latencies)),
        Figure(section=SECTION, path=f"{name}: collector CPU", unit="us/record",
               median=outcome.collector_cpu / max(outcome.records, 1) * 1e6,
               p99=outcome.collector_cpu / max(outcome.records, 1) * 1e6, samples=1),
    ]
    if outcome.server_cpu is not None:
        figures.append(Figure(section=SECTION, path=f"{name}: PostgreSQL server CPU", unit="us/record",
                              median=outcome.server_cpu / max(outcome.records, 1) * 1e6,
                              p99=outcome.server_cpu / max(outcome.records, 1) * 1e6, samples=1))
    return figures


def _export_figures(db: str, root: Path, label: str) -> list[Figure]:
    import duckdb

    from home.export.runs import export_parquet

    to = root / f"lake-{label}"
    report = export_parquet(db, to)
    began = time.perf_counter()
    con = duckdb.connect()
    rows, _ = con.execute(
        f"SELECT count(*), avg(epoch(ts)) FROM read_parquet('{to}/**/*.parquet', hive_partitioning = true)"
    ).fetchone()
    scan = time.perf_counter() - began
    con.close()
    if rows != report.records:
        raise RuntimeError(f"DuckDB read {rows} records back, the export wrote {report.records}")
    return [
        Figure(section=SECTION, path=f"export to Parquet ({label})", unit="records/s", median=report.records / report.seconds,
               p99=report.records / report.seconds, samples=1, note=f"{report.records:,} records, {report.files} files, {report.bytes / 1e6:.1f} MB in {report.seconds:.2f} s"),
        Figure(section=SECTION, path=f"DuckDB scan of the export ({label})", unit="ms", median=scan * 1e3, p99=scan * 1e3, samples=1,
               note="count(*) and avg(ts) over every file, hive partitioning, fresh connection"),
    ]


def measure_fleet(
    options: FleetOptions, root: Path, *, server: Any = None, log: Callable[[str], None] = lambda message: None
) -> list[Figure]:
    """Every configuration of ``options``; starts (and stops) its own PostgreSQL cluster
    unless ``server`` (a ``bench.pgcluster.PostgresServer``) is given."""
    from .pgcluster import PostgresServer

    own = None
    if server is None and any(name.startswith("postgres") for name in options.configs):
        own = server = PostgresServer(durable=True)
        server.start()
    figures: list[Figure] = []
    try:
        tokens_path = root / "tokens.json"
        tokens = write_tokens(tokens_path, options.devices)
        rng = random.Random(15)
        bodies = {device: _bodies(device, options, rng) for device in sorted(tokens)}
        for name in options.configs:
            log(f"[bench] fleet: {options.devices} devices x {options.batches_per_device} batches x "
                f"{options.records_per_batch} records into {name}")
            try:
                outcome, db = _run_config(name, options, root, server, tokens, bodies, tokens_path)
                figures += _figures(name, outcome)
                if name in ("sqlite, 1 collector", "postgres, 1 collector"):
                    log(f"[bench] fleet: export of {name.split(',')[0]} to Parquet, DuckDB scan")
                    figures += _export_figures(db, root, name.split(",")[0])
            except Exception as exc:  # noqa: BLE001 - a failing configuration is a figure, not the end of the run
                figures.append(error_figure(section=SECTION, path=f"{name}: ingest", unit="records/s", error=exc))
    finally:
        if own is not None:
            own.stop()
    return figures


def main() -> None:
    import argparse
    import tempfile

    from .figures import Report

    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=2, help="batches per device")
    parser.add_argument("--records", type=int, default=100, help="records per batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    options = FleetOptions(devices=args.devices, batches_per_device=args.batches, records_per_batch=args.records)
    with tempfile.TemporaryDirectory(prefix="edgepack-fleet-") as tmp:
        figures = measure_fleet(options, Path(tmp), log=lambda message: print(message, flush=True))
    print(table(figures))
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.json:
        report = Report(mode="fleet", environment={"loadavg_end": list(os.getloadavg()), "cpu_count": os.cpu_count()})
        report.figures = figures
        report.write(args.json)


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table."""
    lines = ["| what | unit | median | p99 | note |", "| --- | --- | ---: | ---: | --- |"]
    # Single-measurement figures carry their value as p99 too (the results file wants one).
    for figure in figures:
        if figure.error:
            lines.append(f"| {figure.path} | {figure.unit} | error | | {figure.error} |")
            continue
        p99 = f"{figure.p99:,.1f}" if figure.p99 is not None and figure.samples > 1 else ""
        lines.append(f"| {figure.path} | {figure.unit} | {figure.median:,.1f} | {p99} | {figure.note or ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
