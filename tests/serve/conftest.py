"""Real bundles and real ``edgepack serve`` processes for the serve tests.

Bundles come from ``tests/runtime/builder.py`` (small sklearn pipelines converted with
skl2onnx, packed as the packager does): the fire-risk classifier signed at version 1 and
2, a string-label classifier and a regressor. Servers are real subprocesses listening on
a unix socket or a loopback port in ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.signing import generate_keypair
from tests.runtime import builder

from .support import ServeProcess, json_rows


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("serve-keys"))


@pytest.fixture(scope="session")
def serve_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-bundles")


@pytest.fixture(scope="session")
def fire_v1(serve_bundles: Path, keys: tuple[Path, Path]) -> builder.Built:
    return builder.fire_classifier(serve_bundles / "fire-v1.edgepkg", signing_key=keys[0])


@pytest.fixture(scope="session")
def fire_v2(serve_bundles: Path, keys: tuple[Path, Path]) -> builder.Built:
    return builder.fire_classifier(serve_bundles / "fire-v2.edgepkg", seed=5, version="2", signing_key=keys[0])


@pytest.fixture(scope="session")
def levels(serve_bundles: Path) -> builder.Built:
    return builder.label_classifier(serve_bundles / "levels.edgepkg")


@pytest.fixture(scope="session")
def burn(serve_bundles: Path) -> builder.Built:
    return builder.regressor(serve_bundles / "burn.edgepkg")


@pytest.fixture
def rows(fire_v1: builder.Built) -> list[dict]:
    """40 rows of the fire-risk frame, JSON-ready (NaN -> None), some with missing values."""
    return json_rows(fire_v1.frame, 40)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str, socket: bool = True, env: dict[str, str] | None = None) -> ServeProcess:
        process = ServeProcess.start(list(args), tmp_path, socket=socket, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def other_key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("serve-other-keys"))
