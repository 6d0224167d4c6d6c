"""Fixtures shared by the collector tests: one real collector per test module, a fresh device on it per test.

Every test that starts a collector through these fixtures (``collector``,
``collector_factory``, ``shared``, ``store_collector``) runs twice, once per store
(``[sqlite]`` and ``[postgres]``): the same end-to-end, crash and bad-input tests hold for
both. Tests of what only the SQLite file has (its locks, WAL, file modes, triggers written
in SQLite) are listed in ``SQLITE_ONLY`` and run on SQLite alone; their PostgreSQL
counterparts are in test_postgres.py. Modules in ``ONE_STORE`` test the HTTP front
(slow clients, memory bounds, token files), which no store touches, and run on SQLite only
to keep the suite's time in check.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import STORES, RunningCollector, database_for, start_collector

SQLITE_ONLY = {
    # SQLite's own machinery: a trigger written in SQLite, its WAL, its write lock.
    "test_failing_store_answers_503_and_keeps_nothing_of_the_batch",
    "test_stop_signal_shuts_down_cleanly",
    "test_store_locked_by_another_process_answers_503",
    "test_too_many_batches_in_progress_answers_503",
    "test_sigterm_lets_a_batch_in_progress_finish",
    "test_port_in_use_is_a_clear_error",
    "test_store_is_wal_with_unique_device_record_key",
}
ONE_STORE = {"test_slow_clients", "test_memory", "test_files", "test_tokens", "test_openapi", "test_settings", "test_server"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "collector_store" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module == "test_postgres":
        stores: tuple[str, ...] = ("postgres",)
    else:
        stores = ("sqlite",) if metafunc.function.__name__ in SQLITE_ONLY or module in ONE_STORE else STORES
    metafunc.parametrize("collector_store", stores, scope="module")


@pytest.fixture(scope="module")
def store_collector(
    tmp_path_factory: pytest.TempPathFactory, collector_store: str, request: pytest.FixtureRequest
) -> Callable[..., RunningCollector]:
    """Start a module-scoped collector on the module's store; the caller stops it."""

    def start(name: str = "collector", **limits: Any) -> RunningCollector:
        return start_collector(
            Path(tmp_path_factory.mktemp(name)), db_url=database_for(request, collector_store), **limits
        )

    return start


@pytest.fixture(scope="module")
def shared(store_collector: Callable[..., RunningCollector]) -> Iterator[RunningCollector]:
    running = store_collector()
    yield running
    running.stop()


@pytest.fixture
def device(shared: RunningCollector) -> tuple[str, str]:
    """A fresh device on the shared collector: (device id, token)."""
    device_id = f"dev-{uuid.uuid4().hex[:8]}"
    return device_id, shared.add_device(device_id)
