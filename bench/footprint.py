"""Install footprint: a clean virtual environment with the device install against one with the
build install, and the size of each bundle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import BenchError
from .figures import Figure, error_figure, set_ratios
from .zoo import ModelCase

DEVICE = "device venv: pip install edgepack"
BUILD = "build venv: pip install 'edgepack[packager]'"
EMPTY = "empty venv (python -m venv --without-pip)"
MB = 1024 * 1024
PIP_TIMEOUT = 1_800


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root``, symlinks not followed (a venv links its python)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def _run(args: list[str]) -> None:
    completed = subprocess.run(args, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    if completed.returncode != 0:
        tail = (completed.stderr.strip() or completed.stdout.strip()).splitlines()[-3:]
        raise BenchError(f"{' '.join(args[:4])} ... failed: {' | '.join(tail)}")


SOURCES = ("pyproject.toml", "README.md", "edgepack", "packager", "runtime", "telemetry")


def _wheel(repo: Path, out: Path) -> Path:
    """Build the edgepack wheel once, from a copy of the sources (setuptools writes build/ and
    egg-info next to them); both venvs install the same file."""
    source = out / "source"
    for name in SOURCES:
        if (repo / name).is_dir():
            shutil.copytree(repo / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (repo / name).exists():
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)])
    wheels = sorted(out.glob("edgepack-*.whl"))
    if not wheels:
        raise BenchError(f"pip wheel wrote no edgepack wheel into {out}")
    return wheels[-1]


def _venv(path: Path, requirement: str | None) -> int:
    """Create a venv without pip, install ``requirement`` into it with this interpreter's pip
    (``--python``; pip's download cache is reused), return its size."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    if requirement is not None:
        _run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "--quiet", "--disable-pip-version-check", requirement])
    return tree_bytes(path)


def measure_venvs(repo: Path, workdir: Path, *, build: bool) -> list[Figure]:
    """Sizes of an empty venv, the device venv and (if ``build``) the build venv; the ratio is
    against the build venv."""
    figures: list[Figure] = []
    try:
        wheel = _wheel(repo, workdir / "wheel")
    except Exception as exc:  # noqa: BLE001
        return [error_figure(section="footprint", path=p, unit="MB", error=exc) for p in (DEVICE, BUILD)]
    plan = [(EMPTY, None), (DEVICE, str(wheel))]
    if build:
        plan.append((BUILD, f"{wheel}[packager]"))
    for index, (name, requirement) in enumerate(plan):
        try:
            size = _venv(workdir / f"venv-{index}", requirement)
        except Exception as exc:  # noqa: BLE001
            figures.append(error_figure(section="footprint", path=name, unit="MB", error=exc))
            continue
        figures.append(Figure(section="footprint", path=name, unit="MB", median=size / MB, p99=size / MB, samples=1, note="bytes of all files in the venv"))
    if not build:
        figures.append(error_figure(section="footprint", path=BUILD, unit="MB", error="skipped (device venv only in this mode)"))
    set_ratios(figures, BUILD)
    return figures


def bundle_figures(cases: list[ModelCase]) -> list[Figure]:
    figures = []
    for case in cases:
        path = "bundle .edgepkg"
        if case.bundle is None:
            figures.append(error_figure(section="footprint", path=path, unit="MB", error=f"n/a (no bundle: {case.bundle_error})", model=case.name))
        else:
            size = case.bundle.stat().st_size / MB
            figures.append(Figure(section="footprint", path=path, unit="MB", model=case.name, median=size, p99=size, samples=1, note="file size"))
    return figures
