"""Helpers of the ship tests: the host platform, sample rows, comparing predictions."""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("mlflow", "sklearn", "skl2onnx", "onnx", "pandas")
HEAVY_DISTRIBUTIONS = ("mlflow", "scikit-learn", "skl2onnx", "onnx", "pandas")


def host_platform() -> str:
    """The wheel platform of this machine (glibc 2.28 or newer, as Debian 12 has)."""
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        return "manylinux_2_28_x86_64"
    if machine in ("arm64", "aarch64"):
        return "manylinux_2_28_aarch64"
    raise RuntimeError(f"no device wheel platform known for machine {machine!r}")


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True, kw_only=True)
class DepsBundle:
    path: Path
    """The ``.edgepkg`` built with ``with_deps=[platform]``; signed."""
    platform: str
    """The wheel platform it carries."""
    public_key: Path
    """The key its manifest is signed with."""
    rows: list[dict[str, Any]]
    """Sample input rows (JSON-ready: missing values are ``None``)."""
    report: Any
    """The ``BuildReport``."""


def json_rows(frame: Any, count: int) -> list[dict[str, Any]]:
    rows = frame.head(count).to_dict(orient="records")
    return [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in rows
    ]


def host_predictions(bundle: Path, rows: list[dict[str, Any]], public_key: Path | None = None) -> list[Any]:
    """What the host's runtime answers, through JSON (the wire form ``edgepack predict`` prints)."""
    import runtime

    model = runtime.load(bundle, public_key=public_key)
    return json.loads(json.dumps(model.predict(rows)))


def parse_json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_same_predictions(got: list[Any], expected: list[Any]) -> None:
    assert len(got) == len(expected), f"{len(got)} predictions for {len(expected)} rows"
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g["prediction"] == e["prediction"], f"row {index}: {g} != {e}"
        assert g["probabilities"].keys() == e["probabilities"].keys(), f"row {index}: {g} != {e}"
        for label, p in e["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(p, rel=1e-6, abs=1e-7), f"row {index}, class {label}"
