"""``edgepack build`` as a user runs it: a fresh process per build, end-to-end wall time, the
build's own per-phase seconds (resolve, load, convert, parity, write, self-test, tag), and the
start-up a build pays before any work (a build of a model name that does not exist)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .errors import BenchError
from .figures import Figure, error_figure, timing_figure
from .options import BenchOptions
from .zoo import ModelCase

SECTION = "build"
CHILD_TIMEOUT = 600.0
PHASES = ("resolve", "load", "convert", "parity", "write", "self_test", "tag")


def _edgepack(args: list[str], cwd: Path, cpu: list[float] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``python -m edgepack ARGS``; wall seconds, and the child's CPU seconds appended to ``cpu``
    (on a shared machine wall time follows the load, CPU time follows the work)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edgepack", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return wall, done


def measure_build(case: ModelCase, registry_uri: str, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Median over ``options.cold_runs`` (one outside the full mode) fresh ``edgepack build`` processes of ``case``."""
    if not case.version:
        return [error_figure(section=SECTION, path="edgepack build", unit="s", error=f"model not registered: {case.registry_error}", model=case.name)]
    reference = workdir / f"{case.name}-reference.parquet"
    case.frame.head(500).to_parquet(reference)
    walls: list[float] = []
    phases: dict[str, list[float]] = {}
    startup: list[float] = []
    cpu: list[float] = []
    startup_cpu: list[float] = []
    runs = options.cold_runs if options.mode == "full" else 1  # each run is two fresh processes
    for run in range(runs):
        out = workdir / f"{case.name}-build-{run}.edgepkg"
        wall, done = _edgepack(
            ["build", case.model_uri, "-o", str(out), "--tracking-uri", registry_uri, "--reference-data", str(reference), "--json", "--no-tag"],
            workdir,
            cpu,
        )
        if done.returncode != 0:
            raise BenchError(f"edgepack build exited {done.returncode}: {done.stderr.strip()[-300:]}")
        walls.append(wall)
        for name, seconds in json.loads(done.stdout).get("phases", {}).items():
            phases.setdefault(name, []).append(float(seconds))
        wall, done = _edgepack(["build", "models:/no-such-model/1", "-o", str(workdir / "none.edgepkg"), "--tracking-uri", registry_uri], workdir, startup_cpu)
        if done.returncode == 0:
            raise BenchError("a build of a model that does not exist succeeded")
        startup.append(wall)
    figures = [
        timing_figure(
            section=SECTION, path="edgepack build (end to end)", seconds=walls, unit="s", model=case.name,
            note="fresh process: interpreter start, imports, registry, conversion, parity gate, bundle, self-test",
        ),
        timing_figure(
            section=SECTION, path="edgepack build (no such model)", seconds=startup, unit="s", model=case.name,
            note="start-up before any work: interpreter, imports, registry lookup, error",
        ),
    ]
    figures += [
        timing_figure(section=SECTION, path="edgepack build CPU (end to end)", seconds=cpu, unit="s", model=case.name,
                      note="user + system CPU seconds of the build process: what the wall time would be on an idle core"),
        timing_figure(section=SECTION, path="edgepack build CPU (no such model)", seconds=startup_cpu, unit="s", model=case.name),
    ]
    for name in PHASES:
        if name in phases:
            figures.append(timing_figure(section=SECTION, path=f"build phase: {name}", seconds=phases[name], unit="s", model=case.name))
    return figures
