"""Fixtures of the ship tests: bundles built with ``--with-deps`` for this machine's platform.

The wheel cache is shared by all pytest-xdist workers of one run (wheels are written to it
atomically), so the ~50 MB of device wheels are fetched once per run, not once per worker.
Set ``EDGEPACK_WHEEL_CACHE`` to reuse a cache across runs while developing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import DepsBundle, host_platform, json_rows, running_python


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    given = os.environ.get("EDGEPACK_WHEEL_CACHE")
    if given:
        yield Path(given)
        return
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    cache = shared / "edgepack-wheel-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        # build_bundle calls device_wheels with default options, which read this variable.
        patch.setenv("EDGEPACK_WHEEL_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def deps_bundle(make_bundle: Any, wheel_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> DepsBundle:
    """The signed fire-risk model rebuilt through ``build_bundle(with_deps=[host platform])``."""
    from packager import build_bundle

    signed = make_bundle("signed")
    target = host_platform()
    out = tmp_path_factory.mktemp("deps-bundle") / "fire-risk.edgepkg"
    report = build_bundle(
        "models:/fire-risk@champion",
        out,
        tracking_uri=signed.tracking_uri,
        signing_key=signed.private_key,
        with_deps=[target],
        python_version=running_python(),
    )
    return DepsBundle(path=out, platform=target, public_key=signed.public_key, rows=json_rows(signed.frame, 25), report=report)
