"""The record store on a PostgreSQL server, for several collectors sharing one database.

The contract is the SQLite store's (``store.py``): records keyed by (device, id) are
stored once forever (``ON CONFLICT DO NOTHING``), a batch in one transaction, the same
counts on replay, the same stats. A batch goes in as ONE statement (see ``_INGEST``),
so it costs one round trip whatever its size and is atomic on its own; the number of rows
its INSERT returned is the number of records stored for the first time, as SQLite's
executemany rowcount is.

Two collectors that receive the same batch at once both insert the same keys in the
same order: the second waits for the first to commit and then skips every row, so it
answers ``accepted: 0``; nothing is stored twice. (PostgreSQL runs the parts of one
WITH in the order the plan pulls them, records before the device row, so two such
statements take their locks in the same order; a deadlock, should one ever be detected,
is an error like any other: 503, and the device sends the batch again.) Each collector holds a pool of connections (psycopg_pool), so several batches are
stored at the same time; commits are synchronous (the server's default), so a 200 means
the batch is on the server's disk. Every psycopg and pool error is translated into
``StoreError`` here, which the app answers with 503 and ``Retry-After``.

PostgreSQL text cannot hold the NUL character, which SQLite stores: a batch whose model,
version or batch id holds one is refused with 422 naming the field (the canonical JSON
of inputs, outputs and flags escapes it, so those are stored as sent).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from ..errors import SchemaError, StoreError
from .migrations import migrate_postgres
from ..schema import COUNTER_KEYS, Batch
from .sqlite import IngestResult, stats_answer

CONNECT_TIMEOUT_SECONDS = 10.0
_INGEST = """
    WITH batch AS (SELECT %(columns)s::json AS j),
    stored AS (
        INSERT INTO records (device, id, batch_id, received_at, ts, model, version, bundle_sha256, inputs, outputs, flags)
        SELECT %(device)s, r.id, %(batch_id)s, %(received_at)s, r.ts::float8, r.model, r.version, r.bundle_sha256,
               r.inputs, r.outputs, r.flags
        FROM batch, ROWS FROM (
            json_array_elements_text(batch.j->0), json_array_elements_text(batch.j->1), json_array_elements_text(batch.j->2),
            json_array_elements_text(batch.j->3), json_array_elements_text(batch.j->4), json_array_elements_text(batch.j->5),
            json_array_elements_text(batch.j->6), json_array_elements_text(batch.j->7)
        ) AS r(id, ts, model, version, bundle_sha256, inputs, outputs, flags)
        ON CONFLICT (device, id) DO NOTHING
        RETURNING 1
    ),
    device AS (
        INSERT INTO devices (device, first_seen, last_seen, batches, dropped, sampled_out, dead_lettered)
        VALUES (%(device)s, %(received_at)s, %(received_at)s, 1, %(dropped)s, %(sampled_out)s, %(dead_lettered)s)
        ON CONFLICT (device) DO UPDATE SET
            last_seen = GREATEST(devices.last_seen, excluded.last_seen),
            batches = devices.batches + 1,
            dropped = GREATEST(devices.dropped, excluded.dropped),
            sampled_out = GREATEST(devices.sampled_out, excluded.sampled_out),
            dead_lettered = GREATEST(devices.dead_lettered, excluded.dead_lettered)
    ),
    counters AS (
        INSERT INTO device_counters (device, name, value)
        SELECT %(device)s, c.key, c.value::bigint FROM json_each_text(%(extra)s::json) AS c
        ON CONFLICT (device, name) DO UPDATE SET value = GREATEST(device_counters.value, excluded.value)
    )
    SELECT count(*) FROM stored
"""
"""A batch in ONE statement, so one round trip: the columns travel as one JSON array of
arrays (orjson, in C), which ``ROWS FROM`` zips back into rows in order on the server.
(psycopg's own list adaptation escapes every element with a Python regex: 26 us of
collector CPU per record, against 4 this way.) The statement is atomic on its own: the
pool's connections run in autocommit, and every part of a WITH runs exactly once."""


def is_postgres_url(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a URL psycopg cannot parse is shown only up to its host
        return url.split("@")[-1]
    params.pop("password", None)
    user, host, port, name = params.get("user", ""), params.get("host", ""), params.get("port", ""), params.get("dbname", "")
    if host and not str(host).startswith("/"):
        return f"postgresql://{user + '@' if user else ''}{host}{':' + str(port) if port else ''}/{name}"
    return make_conninfo(**params)


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// database needs psycopg 3 and psycopg_pool: pip install 'edgepack[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


@contextmanager
def translated(action: str, url: str) -> Iterator[None]:
    """Turn every psycopg and pool error into ``StoreError`` naming ``action`` and the server."""
    psycopg, psycopg_pool = _psycopg()
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StoreError(f"{action} failed: no connection to {redacted(url)} became free or could be opened ({exc})") from exc
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"{action} failed on {redacted(url)}: {detail}") from exc


def _refuse_nul(batch: Batch) -> None:
    if "\x00" in batch.batch_id:
        raise SchemaError("expected text without NUL characters (PostgreSQL cannot store them)", field="batch_id")
    for name in ("model", "version"):
        column = getattr(batch.records, name)
        for value in set(column):
            if "\x00" in value:
                index = column.index(value)
                raise SchemaError(
                    "expected text without NUL characters (PostgreSQL cannot store them)", field=f"records[{index}].{name}"
                )


class PostgresStore:
    """Records in a PostgreSQL database through a pool of ``pool_size`` connections;
    safe to use from that many threads at once."""

    def __init__(
        self, url: str, *, pool_size: int = 8, migrate: bool = True, name: str = "collector-store", check: bool = False
    ) -> None:
        """``check`` tests each connection as it leaves the pool (one round trip), so one cut by
        a server restart is replaced instead of failing a request: worth it for stats, which
        are rare; a batch instead meets the broken connection once, is answered 503, and the
        device sends it again."""
        psycopg, psycopg_pool = _psycopg()
        self.url = url
        with translated(f"opening the store {redacted(url)}", url):
            # One plain connection first: a wrong host, port, user or database fails here at
            # once with the server's own words, where the pool would retry until its timeout.
            with psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_SECONDS), autocommit=True) as conn:
                if migrate:
                    migrate_postgres(conn, redacted(url))
            self.pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=False,
                name=name,
                timeout=CONNECT_TIMEOUT_SECONDS,
                kwargs={"connect_timeout": int(CONNECT_TIMEOUT_SECONDS), "autocommit": True},
                check=psycopg_pool.ConnectionPool.check_connection if check else None,
            )
            try:
                self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            except BaseException:
                self.pool.close()
                raise

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult:
        """Store ``batch`` for ``device`` in one statement; already-known record ids are skipped."""
        _refuse_nul(batch)
        records = batch.records
        counters = batch.counters
        columns = orjson.dumps(
            [records.id, records.ts, records.model, records.version, records.bundle_sha256,
             records.inputs, records.outputs, records.flags]
        ).decode()
        params = {
            "columns": columns,
            "device": device,
            "batch_id": batch.batch_id,
            "received_at": received_at,
            **{key: getattr(counters, key) if counters else 0 for key in COUNTER_KEYS},
            "extra": orjson.dumps(counters.extra if counters is not None else {}).decode(),
        }
        with translated(f"storing batch {batch.batch_id!r} of device {device!r}", self.url):
            with self.pool.connection() as conn:
                accepted = conn.execute(_INGEST, params).fetchone()[0]
        return IngestResult(accepted=accepted, duplicates=len(records) - accepted)

    def stats(self, device: str | None = None) -> dict[str, Any]:
        """Totals for ``device``, or over every device when None; the same answer as
        ``store.read_stats`` gives for SQLite."""
        where, params = ("WHERE device = %s", (device,)) if device is not None else ("", ())
        with translated("reading stats", self.url):
            with self.pool.connection() as conn, conn.transaction():
                # One snapshot, so the totals agree with one another.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                by_model: dict[str, dict[str, int]] = {}
                for model, version, count in conn.execute(
                    f"SELECT model, version, COUNT(*) FROM records {where} GROUP BY model, version "
                    "ORDER BY model COLLATE \"C\", version COLLATE \"C\"",
                    params,
                ):
                    by_model.setdefault(model, {})[version] = count
                records = conn.execute(f"SELECT COUNT(*) FROM records {where}", params).fetchone()[0]
                devices, *known = conn.execute(
                    f"SELECT COUNT(*), {', '.join(f'COALESCE(SUM({key}), 0)' for key in COUNTER_KEYS)} FROM devices {where}",
                    params,
                ).fetchone()
                counters = dict(zip(COUNTER_KEYS, map(int, known)))
                for name, total in conn.execute(
                    f"SELECT name, COALESCE(SUM(value), 0) FROM device_counters {where} GROUP BY name ORDER BY name COLLATE \"C\"",
                    params,
                ):
                    counters[name] = int(total)
        return stats_answer(device, records, devices, by_model, counters)

    def close(self) -> None:
        """Close every connection of the pool."""
        with translated(f"closing the store {redacted(self.url)}", self.url):
            self.pool.close()
