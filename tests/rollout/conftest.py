"""Fixtures of the rollout tests: signed bundles v1, v2 and a v3 that needs a feature the
apps do not send (its health gate fails), a home service, devices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.signing import generate_keypair
from tests.runtime import builder

from .support import Device, Home


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("rollout-keys"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> dict[str, builder.Built]:
    where = tmp_path_factory.mktemp("rollout-bundles")
    return {
        "v1": builder.fire_classifier(where / "fire-v1.edgepkg", signing_key=keys[0]),
        "v2": builder.fire_classifier(where / "fire-v2.edgepkg", seed=5, version="2", signing_key=keys[0]),
        # One more input column: apps that send the v1 features get InputError on every row.
        "v3": builder.fire_classifier(where / "fire-v3.edgepkg", seed=6, numeric=4, version="3", signing_key=keys[0]),
    }


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    running = Home(tmp_path / "home")
    yield running
    running.stop()


@pytest.fixture
def make_device(home: Home, tmp_path: Path, bundles: dict[str, builder.Built], keys: tuple[Path, Path]) -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(device_id: str) -> Device:
        device = Device(home, tmp_path / "devices" / device_id, device_id, initial=bundles["v1"].path, public_key=keys[1])
        made.append(device)
        return device

    yield make
    for device in made:
        device.stop()
