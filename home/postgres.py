"""The record store on a PostgreSQL server, for several collectors sharing one database.

The contract is the SQLite store's (``store.py``): records keyed by (device, id) are
stored once forever (``ON CONFLICT DO NOTHING``), a batch in one transaction, the same
counts on replay, the same stats. A batch goes in as ONE statement: its columns are sent
as arrays and ``unnest`` turns them back into rows on the server, so a batch costs one
round trip whatever its size, and the row count of that statement is the number of
records stored for the first time, as SQLite's executemany rowcount is.

Two collectors that receive the same batch at once both insert the same keys in the
same order: the second waits for the first to commit and then skips every row, so it
answers ``accepted: 0``; nothing is stored twice and no deadlock is possible between
them. Each collector holds a pool of connections (psycopg_pool), so several batches are
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

from .errors import SchemaError, StoreError
from .migrations import migrate_postgres
from .schema import COUNTER_KEYS, Batch
from .store import IngestResult

CONNECT_TIMEOUT_SECONDS = 10.0
_INSERT_RECORDS = """
    INSERT INTO records (device, id, batch_id, received_at, ts, model, version, bundle_sha256, inputs, outputs, flags)
    SELECT %(device)s, r.id, %(batch_id)s, %(received_at)s, r.ts, r.model, r.version, r.bundle_sha256, r.inputs, r.outputs, r.flags
    FROM unnest(%(id)s::text[], %(ts)s::float8[], %(model)s::text[], %(version)s::text[], %(bundle_sha256)s::text[],
                %(inputs)s::text[], %(outputs)s::text[], %(flags)s::text[])
         AS r(id, ts, model, version, bundle_sha256, inputs, outputs, flags)
    ON CONFLICT (device, id) DO NOTHING
"""
_UPDATE_DEVICE = """
    INSERT INTO devices (device, first_seen, last_seen, batches, dropped, sampled_out, dead_lettered)
    VALUES (%(device)s, %(now)s, %(now)s, 1, %(dropped)s, %(sampled_out)s, %(dead_lettered)s)
    ON CONFLICT (device) DO UPDATE SET
        last_seen = GREATEST(devices.last_seen, excluded.last_seen),
        batches = devices.batches + 1,
        dropped = GREATEST(devices.dropped, excluded.dropped),
        sampled_out = GREATEST(devices.sampled_out, excluded.sampled_out),
        dead_lettered = GREATEST(devices.dead_lettered, excluded.dead_lettered)
"""
_UPDATE_COUNTERS = """
    INSERT INTO device_counters (device, name, value)
    SELECT %(device)s, c.name, c.value FROM unnest(%(names)s::text[], %(values)s::bigint[]) AS c(name, value)
    ON CONFLICT (device, name) DO UPDATE SET value = GREATEST(device_counters.value, excluded.value)
"""


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
                kwargs={"connect_timeout": int(CONNECT_TIMEOUT_SECONDS)},
                check=psycopg_pool.ConnectionPool.check_connection if check else None,
            )
            try:
                self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            except BaseException:
                self.pool.close()
                raise

    def ingest(self, device: str, batch: Batch, *, received_at: float) -> IngestResult:
        """Store ``batch`` for ``device`` in one transaction; already-known record ids are skipped."""
        _refuse_nul(batch)
        records = batch.records
        counters = batch.counters
        with translated(f"storing batch {batch.batch_id!r} of device {device!r}", self.url):
            # The pool's connection context commits on success and rolls back on error.
            with self.pool.connection() as conn:
                accepted = 0
                if len(records):
                    cursor = conn.execute(
                        _INSERT_RECORDS,
                        {
                            "device": device,
                            "batch_id": batch.batch_id,
                            "received_at": received_at,
                            "id": records.id,
                            "ts": records.ts,
                            "model": records.model,
                            "version": records.version,
                            "bundle_sha256": records.bundle_sha256,
                            "inputs": records.inputs,
                            "outputs": records.outputs,
                            "flags": records.flags,
                        },
                    )
                    accepted = cursor.rowcount
                conn.execute(
                    _UPDATE_DEVICE,
                    {
                        "device": device,
                        "now": received_at,
                        **{key: getattr(counters, key) if counters else 0 for key in COUNTER_KEYS},
                    },
                )
                if counters is not None and counters.extra:
                    conn.execute(
                        _UPDATE_COUNTERS,
                        {"device": device, "names": list(counters.extra), "values": list(counters.extra.values())},
                    )
        return IngestResult(accepted=accepted, duplicates=len(records) - accepted)

    def stats(self, device: str | None = None) -> dict[str, Any]:
        """Totals for ``device``, or over every device when None; the same answer as
        ``store.read_stats`` gives for SQLite."""
        where, params = ("WHERE device = %s", (device,)) if device is not None else ("", ())
        with translated("reading stats", self.url):
            with self.pool.connection() as conn:
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
        return {
            "scope": "fleet" if device is None else "device",
            "device": device,
            "records": records,
            "devices": devices,
            "by_model": by_model,
            **{key: counters[key] for key in COUNTER_KEYS},
            "counters": counters,
        }

    def close(self) -> None:
        """Close every connection of the pool."""
        with translated(f"closing the store {redacted(self.url)}", self.url):
            self.pool.close()
