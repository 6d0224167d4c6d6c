"""The collector's CPU per record for each body kind a device may send: undoing the
compression, decoding and checking the batch (``home.body``, ``home.schema``,
``home.packed``), in process, on batches built by the device's own sync code; and
storing the parsed batch in SQLite (``home.stores.sqlite.Store.ingest``) beside it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

from .figures import Figure, error_figure, set_ratios, timing_figure
from .options import BenchOptions
from .zoo import ModelCase

JSON_GZIP = "collector ingest CPU per record: JSON + gzip 1 (before)"
PACKED_ZSTD = "collector ingest CPU per record: MessagePack + zstd 1"
PACKED_GZIP = "collector ingest CPU per record: MessagePack + gzip 1"
PACKED_PLAIN = "collector ingest CPU per record: MessagePack, uncompressed"
STORE = "collector SQLite store.ingest per record (parsed batch, wall)"
STORE_RANDOM = "collector SQLite store.ingest per record, random UUIDs (wall)"
KINDS = {
    JSON_GZIP: {"wire": "json", "zstd": False},
    PACKED_ZSTD: {"wire": "packed"},
    PACKED_GZIP: {"wire": "packed", "zstd": False},
    PACKED_PLAIN: {"wire": "packed", "zstd": False, "gzip": False},
}
STORES = {STORE: "time-ordered, made by telemetry.ids as a device makes them", STORE_RANDOM: "uuid4, as any sender may"}
RECORDS = 1000


def _bodies(case: ModelCase, workdir: Path) -> dict[str, tuple[bytes, str, str]]:
    """One 1,000-record body of each kind, made by the sync service's own encoder."""
    import telemetry
    from telemetry.batch import batch_id_of, encode
    from telemetry.wire import Wire

    from .buffering import _model, _record_rows
    from .record_device import fill

    rows, outputs = _record_rows(case, RECORDS)
    path = workdir / "ingest-source.db"
    with telemetry.Buffer(path, durability="process") as buffer:
        fill(buffer, _model(case), rows, outputs, RECORDS)
        buffer.flush()
        stored = buffer.oldest(RECORDS)
    out = {}
    counters = {"dropped": 0, "sampled_out": 0, "dead_lettered": 0}
    for name, variant in KINDS.items():
        wire = Wire(telemetry.SyncOptions(**variant))  # type: ignore[arg-type]
        batch, _ = encode(stored, 64 << 20, packed=wire.packed)
        body = wire.body(batch_id_of(batch.items), batch.records, counters)
        out[name] = (body.data, body.encoding, body.media_type)
    return out


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def measure_ingest(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Microseconds of collector CPU per record, per body kind, interleaved; and the SQLite
    store's own cost per record for the same (parsed) batch, the floor under all of them."""
    from home.body import PACKED_MEDIA_TYPE, decode_json, read_body
    from home.packed import parse_packed
    from home.schema import parse_batch
    from home.heap import tuned  # the collector's garbage-collector settings
    from home.settings import CollectorSettings
    from home.stores.sqlite import Store
    from telemetry.ids import IdClock

    loop = asyncio.new_event_loop()  # one loop: asyncio.run per call would cost ~1 ms itself
    stores = ExitStack()
    with tuned():
        try:
            bodies = _bodies(case, workdir)
            settings = CollectorSettings(db_path=workdir / "ingest.db", tokens_path=workdir / "unused-tokens.json")
            limit = settings.max_records

            def parse(name: str) -> Callable[[], Any]:
                data, encoding, media_type = bodies[name]

                def run() -> Any:
                    # What the collector's batches route does between the headers and the store.
                    body = loop.run_until_complete(read_body(_one(data), encoding, settings))
                    if media_type == PACKED_MEDIA_TYPE:
                        return parse_packed(body, max_records=limit)
                    return parse_batch(decode_json(body), max_records=limit, source=body)

                return run

            runs = {name: parse(name) for name in KINDS}
            parsed = runs[PACKED_ZSTD]()
            clock = IdClock()

            def storing(path: Path, new_ids: Callable[[int], list[str]]) -> Callable[[], None]:
                store = stores.enter_context(closing(Store(path)))

                def stored() -> None:
                    batch = replace(parsed, records=replace(parsed.records, id=new_ids(len(parsed.records))))
                    store.ingest("bench-device", batch, received_at=time.time())

                return stored

            # The store's cost depends on the ids' order: edgepack devices send time-ordered
            # ids (UUIDv7), whose index entries go at the end of the (device, id) key, so a
            # batch dirties a few pages; random UUIDs (any other sender) dirty a page per
            # record once the store is large, and the WAL and its fsync grow with them.
            runs[STORE] = storing(workdir / "ingest-store.db", clock.take)
            runs[STORE_RANDOM] = storing(workdir / "ingest-store-random.db", lambda n: [str(uuid.uuid4()) for _ in range(n)])
            # CPU time of this thread, not wall time: on a shared machine a wall clock counts
            # the waits for a core too. Paths rotate round by round.
            seconds: dict[str, list[float]] = {name: [] for name in runs}
            order = list(runs)
            for fn in runs.values():
                fn()
            for round_index in range(max(5, options.record_rounds * 2)):
                shift = round_index % len(order)
                for name in order[shift:] + order[:shift]:
                    # The store waits on fsync, which is its cost too: wall time for it.
                    timer = time.perf_counter if name in STORES else time.thread_time
                    for _ in range(3):
                        start = timer()
                        runs[name]()
                        seconds[name].append(timer() - start)
        except Exception as exc:  # noqa: BLE001
            return [error_figure(section="telemetry", path=name, unit="us", error=exc) for name in (*KINDS, *STORES)]
        finally:
            stores.close()
            loop.close()
    figures = []
    sizes = {name: len(bodies[name][0]) for name in KINDS}
    for name in (*KINDS, *STORES):
        if not seconds.get(name):
            figures.append(error_figure(section="telemetry", path=name, unit="us", error="not measured"))
            continue
        note = (
            f"{RECORDS:,} records of {case.name} per body ({sizes[name]:,} bytes as sent), built by telemetry.batch/wire; "
            "decompress + decode + check + canonical JSON, in process, per record"
            if name in KINDS
            else f"the parsed batch of {RECORDS:,} records (fresh ids each call: {STORES[name]}) stored by "
            "home.stores.sqlite.Store.ingest, WAL + synchronous=FULL: the store's floor"
        )
        clock_note = "; wall time (it waits on fsync)" if name in STORES else "; CPU time of the thread"
        figure = timing_figure(section="telemetry", path=name, seconds=seconds[name], unit="us", note=note + clock_note)
        figure.median = (figure.median or 0) / RECORDS
        figure.p99 = (figure.p99 or 0) / RECORDS
        figures.append(figure)
    set_ratios(figures, JSON_GZIP)
    return figures
