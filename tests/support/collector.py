"""Shared fixture: a real collector on a loopback port.

``collector`` (function scope) starts ``edgepack collector`` in a subprocess on a free
127.0.0.1 port, with a fresh SQLite file and tokens file in ``tmp_path``, waits until
``GET /healthz`` answers, and yields a ``RunningCollector``:

- ``url`` (``http://127.0.0.1:PORT``, no trailing slash), ``db_path``, ``tokens_path``,
  ``log_path`` (the subprocess's stderr/stdout: one line per batch);
- ``token`` / ``device_id``: a device registered before start (``"device-1"``);
- ``add_device(device_id) -> token``: register another device; the running collector
  picks it up without a restart; ``add_admin(name) -> token``: an admin token (reads the
  fleet, uploads nothing);
- ``stats(token=None, device=None) -> dict``: ``GET /v1/stats`` with ``token`` (default:
  the fixture device's, which sees only its own device; pass an admin token for the
  fleet), raises on a non-200;
- ``records(device_id=None) -> list[dict]``: the stored rows, read straight from SQLite
  (``inputs``/``outputs``/``flags`` decoded), ordered by ``ts`` then ``id``;
- ``restart()``: SIGTERM, wait for a clean exit, start again on the SAME port and files;
- ``stop()``: SIGTERM and wait for a clean exit (exit status 0, else ``AssertionError``);
  ``kill()``: SIGKILL, for crash tests. Teardown stops it if still running.

The store is SQLite unless the ``collector_store`` fixture says ``"postgres"``:
tests/collector/conftest.py parametrizes it, so the same tests run against both stores;
each PostgreSQL collector then gets a fresh database on the session's server
(tests/support/postgres.py), and ``records()``/``devices()`` read that database.

``collector_factory`` (function scope) makes more of them, optionally with other limits:
keyword arguments are ``edgepack collector`` options with underscores, e.g.
``collector_factory(max_body_bytes=65536, max_records=10, max_pending_batches=1, lock_timeout=0.2)``.
``collector_factory(db_url=URI, tokens_path=PATH)`` starts one on a given database and
tokens file (several collectors sharing them). ``start_collector(directory, **limits)`` does the same outside fixtures (e.g. for a
module-scoped fixture built on ``tmp_path_factory``); call ``.stop()`` yourself.

Batches use the HTTP contract of ``home`` (``POST /v1/batches``): note that
``bundle_sha256`` must be 64 hex digits and record ids UUID strings, or the answer is 422.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from home import add_token
from home.process import CollectorProcess

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class RunningCollector(CollectorProcess):
    """One ``edgepack collector`` subprocess and its files; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        device_id: str = "device-1",
        db_url: str | None = None,
        tokens_path: Path | None = None,
        **limits: float,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(
            directory / "collector.db", tokens_path or directory / "tokens.json", directory / "collector.log",
            options=limits, start_timeout=START_TIMEOUT, cwd=ROOT, db_url=db_url,
        )
        self.directory = directory
        self.limits = limits
        self.device_id = device_id
        self.token = self.add_device(device_id)
        self.start()

    def add_device(self, device_id: str, *, rotate: bool = False) -> str:
        """Register ``device_id`` in the tokens file and return its new token."""
        return add_token(self.tokens_path, device_id, rotate=rotate)

    def add_admin(self, name: str = "admin") -> str:
        """Register an admin ``name`` in the tokens file and return its new token."""
        return add_token(self.tokens_path, name, admin=True)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; a clean shutdown exits 0."""
        code = super().stop(timeout)
        assert code in (None, 0), f"collector exited with {code} on SIGTERM:\n{self.log()}"
        return code

    def restart(self) -> None:
        """Clean stop, then start again on the same port with the same files."""
        self.stop()
        self.start()

    def stats(self, token: str | None = None, device: str | None = None) -> dict[str, Any]:
        """``GET /v1/stats`` with ``token`` (default: the fixture device's), optionally ``?device=``."""
        response = httpx.get(
            f"{self.url}/v1/stats",
            params={"device": device} if device is not None else None,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=10.0,
        )
        response.raise_for_status()
        return response.json()

    def rows(self, table: str, where: str = "", params: tuple[str, ...] = (), order: str = "") -> list[dict[str, Any]]:
        """Rows of ``table`` as stored, from either store (``?`` placeholders in ``where``)."""
        if self.db_url is not None:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
                if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()["to_regclass"] is None:
                    return []
                return list(conn.execute(f"SELECT * FROM {table} {where.replace('?', '%s')} {order}", params))
        if not self.db_path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            connection.row_factory = sqlite3.Row
            if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                return []
            return [dict(row) for row in connection.execute(f"SELECT * FROM {table} {where} {order}", params)]
        finally:
            connection.close()

    def records(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records read straight from the store (SQLite's WAL lets this run beside the collector)."""
        where, params = ("WHERE device = ?", (device_id,)) if device_id is not None else ("", ())
        rows = self.rows("records", where, params, 'ORDER BY ts, id COLLATE "C"' if self.db_url else "ORDER BY ts, id")
        for row in rows:
            # The export's bookkeeping, not part of what a device sent.
            row.pop("export_run", None)
            for key in ("inputs", "outputs", "flags"):
                row[key] = json.loads(row[key])
        return rows

    def devices(self) -> dict[str, dict[str, Any]]:
        """The stored per-device rows (counters, batches, first/last seen), by device id."""
        return {row["device"]: row for row in self.rows("devices")}


def start_collector(directory: Path, **limits: Any) -> RunningCollector:
    """Start a collector with its files in ``directory``; the caller stops it."""
    return RunningCollector(directory, **limits)


STORES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def collector_store() -> str:
    """The store collectors of ``collector_factory`` use: "sqlite" here; tests/collector
    parametrizes it over ``STORES``."""
    return "sqlite"


def database_for(request: pytest.FixtureRequest, store: str) -> str | None:
    """A fresh PostgreSQL database URI when ``store`` is "postgres" (None for SQLite)."""
    if store == "sqlite":
        return None
    assert store == "postgres", store
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def collector_factory(
    tmp_path: Path, collector_store: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningCollector]]:
    started: list[RunningCollector] = []

    def make(**limits: Any) -> RunningCollector:
        if "db_url" not in limits:
            limits["db_url"] = database_for(request, collector_store)
        running = start_collector(tmp_path / f"collector-{len(started)}", **limits)
        started.append(running)
        return running

    yield make
    for running in started:
        if running.running:
            running.stop()


@pytest.fixture
def collector(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory()


__all__ = ["STORES", "RunningCollector", "collector", "collector_factory", "collector_store", "database_for", "start_collector"]
