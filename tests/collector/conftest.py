"""Fixtures shared by the collector tests: one real collector per test module, a fresh device on it per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.collector import RunningCollector, start_collector


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    running = start_collector(Path(tmp_path_factory.mktemp("collector")))
    yield running
    running.stop()


@pytest.fixture
def device(shared: RunningCollector) -> tuple[str, str]:
    """A fresh device on the shared collector: (device id, token)."""
    device_id = f"dev-{uuid.uuid4().hex[:8]}"
    return device_id, shared.add_device(device_id)
