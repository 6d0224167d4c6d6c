"""Shared fixture: a real PostgreSQL server, started for the test session.

``postgres_server`` (session scope) runs Debian's ``initdb`` into a fresh temporary
directory and ``pg_ctl start`` on a free 127.0.0.1 port (and a unix socket in the same
directory), trust authentication for loopback only, and stops it (``pg_ctl stop -m
fast``) and deletes the directory when the session ends. PostgreSQL refuses to run as
root, so under root the cluster belongs to the ``postgres`` system user (the Debian
package creates it; scripts/install-postgres.sh installs the package) and the server
programs are run through ``runuser``.

``postgres_server.create_database()`` makes an empty database and returns its URI,
``postgresql://postgres@127.0.0.1:PORT/NAME``; tests get one each, so they never see
each other's rows. ``postgres_url`` is a fresh database for one test.

``collector_pair`` is two real collectors on one fresh database and one tokens file, as
behind a load balancer (the second registers ``device-2``); ``execute(url, sql)`` runs SQL
on a database outside any collector (triggers that fail, migrations from the future).

The server runs with ``fsync=off``: tests kill collectors, never the server, and a
collector's 200 still waits for the commit (``synchronous_commit`` stays on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bench.pgcluster import PostgresServer
from tests.support.collector import RunningCollector


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
def collector_pair(
    collector_factory: Callable[..., RunningCollector], postgres_url: str, tmp_path: Path
) -> tuple[RunningCollector, RunningCollector]:
    tokens = tmp_path / "shared-tokens.json"
    first = collector_factory(db_url=postgres_url, tokens_path=tokens)
    second = collector_factory(db_url=postgres_url, tokens_path=tokens, device_id="device-2")
    return first, second


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


__all__ = ["PostgresServer", "collector_pair", "execute", "postgres_server", "postgres_url"]
