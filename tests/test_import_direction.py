"""The dependency direction of DESIGN.md, checked in fresh interpreters.

Device code must stay light: importing it may not pull in the build-side or home-side
stacks, even when they are installed (as they are in the test environment).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_SIDE = ("mlflow", "sklearn", "skl2onnx", "onnx", "pandas", "xgboost", "lightgbm", "onnxmltools")
HOME_SIDE = ("starlette", "uvicorn", "fastapi")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import runtime", BUILD_SIDE + HOME_SIDE + ("packager", "telemetry", "home")),
        # numpy too: sqlite-utils would import it (13 MB and a thread) for nothing.
        ("import telemetry", BUILD_SIDE + HOME_SIDE + ("packager", "onnxruntime", "runtime", "home", "numpy")),
        ("import edgepack.cli", BUILD_SIDE + HOME_SIDE + ("packager", "home")),
        ("import edgepack.updates, edgepack.updates.loop", BUILD_SIDE + HOME_SIDE + ("packager", "home")),
    ],
)
def test_device_imports_stay_light(code: str, forbidden: tuple[str, ...]) -> None:
    loaded = _top_level(_modules_after(code))
    assert not loaded & set(forbidden), f"{code!r} imported {sorted(loaded & set(forbidden))}"


def _imported_names(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_runtime_source_never_names_build_side_modules() -> None:
    # Catches lazy imports inside functions too, which the sys.modules check cannot see.
    assert not _imported_names("runtime") & {*BUILD_SIDE, "packager", "telemetry", "home"}


def test_telemetry_source_never_names_runtime_or_build_side() -> None:
    assert not _imported_names("telemetry") & {*BUILD_SIDE, *HOME_SIDE, "packager", "onnxruntime", "home"}


def test_device_cli_runs_where_build_and_home_stacks_cannot_be_imported() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {BUILD_SIDE + HOME_SIDE!r}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['edgepack', '--help']\n"
        "from edgepack.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage: edgepack" in out.stdout
