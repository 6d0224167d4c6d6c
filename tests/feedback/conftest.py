"""The home side of feedback runs on both stores, as tests/collector does.

Every test here that starts a collector (``collector``, ``collector_factory``) or asks for
a bare home database (``home_db``) runs twice, ``[sqlite]`` and ``[postgres]``: labels
stored once per (device, record id), duplicates, 409 conflicts, 422 for labels that do
not fit, the import, the labeled export and live scores hold for both. Tests of the
device alone (the buffer's queue, the sync's faults) start no collector and run once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from home.stores.sqlite import Store
from tests.support.collector import STORES, database_for


POSTGRES_ONLY = {"test_postgres_feedback"}
"""Modules of what only PostgreSQL has: several collectors on one database, its server's faults."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "collector_store" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        stores = ("postgres",) if module in POSTGRES_ONLY else STORES
        metafunc.parametrize("collector_store", stores, scope="module")


@pytest.fixture
def home_db(collector_store: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated home database: a SQLite file's path or a PostgreSQL URI."""
    url = database_for(request, collector_store)
    if url is not None:
        from home.stores.postgres import PostgresStore

        PostgresStore(url, pool_size=1).close()
        return url
    path = tmp_path / "collector.db"
    Store(path).close()
    return str(path)
