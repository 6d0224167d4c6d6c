"""Real bundles for the runtime tests, built once per session from small sklearn models.

``tests/runtime/builder.py`` converts with skl2onnx and packs inputs as the packager
does; tests that need a bundle built by the packager itself use ``make_bundle`` from
``tests/support/registry.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.signing import generate_keypair

from . import builder


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private, public) Ed25519 key pair."""
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-bundles")


@pytest.fixture(scope="session")
def fire(bundles: Path, keys: tuple[Path, Path]) -> builder.Built:
    """Binary classifier (int labels), numeric + string features, signed."""
    return builder.fire_classifier(bundles / "fire.edgepkg", signing_key=keys[0])


@pytest.fixture(scope="session")
def fire_v2(bundles: Path, keys: tuple[Path, Path]) -> builder.Built:
    """The same model name and inputs, retrained on other data: version 2."""
    return builder.fire_classifier(bundles / "fire-v2.edgepkg", seed=5, version="2", signing_key=keys[0])


@pytest.fixture(scope="session")
def levels(bundles: Path) -> builder.Built:
    """Three string classes."""
    return builder.label_classifier(bundles / "levels.edgepkg")


@pytest.fixture(scope="session")
def burn(bundles: Path) -> builder.Built:
    """Regressor with a training target range."""
    return builder.regressor(bundles / "burn.edgepkg")


@pytest.fixture(scope="session")
def fire_model(fire: builder.Built):  # type: ignore[no-untyped-def]
    import runtime

    return runtime.load(fire.path)


@pytest.fixture
def good_row() -> dict[str, object]:
    return {"temp c": 25.0, "humidity_pct": 20.5, "wind_kmh": 12.0, "region": "north", "vegetation": "grass"}


@pytest.fixture
def fire_bytes(fire: builder.Built) -> Iterator[bytes]:
    yield fire.path.read_bytes()
