"""The whole loop from the collector (``GET /v1/labeled`` -> promote) runs on both stores;
the example's round reads the collector's SQLite file (``--collector-db FILE``) and runs on
SQLite only."""

from __future__ import annotations

import pytest

from tests.support.collector import STORES

BOTH_STORES = {"test_loop"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "collector_store" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES:
        metafunc.parametrize("collector_store", STORES, scope="module")
