"""Fresh-process measurements: cold start (import to first prediction) and peak RSS, edgepack
against ``mlflow.pyfunc.load_model`` from the registry. Each run is its own child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BenchError
from .figures import Figure, error_figure, set_ratios, summarize, timing_figure
from .inference import native_rows
from .options import BenchOptions
from .zoo import ModelCase

EDGEPACK = "edgepack"
PYFUNC = "mlflow.pyfunc"
CHILD_TIMEOUT = 300.0
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Children compute on one thread, like the runtime's sessions (see suite.run_suite)."""
MEMORY_BATCH = 1_000

# Everything between the two clocks is what a user waits for; the stdlib modules imported
# before the first clock are needed by the harness itself and are cheap.
COLD_EDGEPACK = """
import json, sys, time
start = time.perf_counter()
import runtime
model = runtime.load(sys.argv[1], threads=1)
model.predict(json.loads(sys.argv[2]))
elapsed = time.perf_counter() - start
heavy = [m for m in ("pandas", "sklearn", "mlflow", "skl2onnx", "onnx", "scipy") if m in sys.modules]
print(json.dumps({"seconds": elapsed, "heavy_modules": heavy}))
"""

COLD_PYFUNC = """
import json, sys, time
start = time.perf_counter()
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.DataFrame([json.loads(sys.argv[2])]))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

PEAK_RSS = """
import resource


def peak_rss_kb():
    # Not ru_maxrss: Linux carries the parent's peak RSS across fork + exec, so a child of this
    # (large) benchmark process would report the benchmark's own peak. VmHWM is the peak of
    # this process image alone.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def report(made):
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_kb": peak_rss_kb(), "ru_maxrss_kb": usage, "predictions": made}))
"""

MEMORY_EDGEPACK = """
import json, sys
""" + PEAK_RSS + """
import numpy as np
import runtime
model = runtime.load(sys.argv[1], threads=1)
data = np.load(sys.argv[2])
columns = {name: (data[name].astype(object) if data[name].dtype.kind == "U" else data[name]) for name in json.loads(sys.argv[3])}
total, batch, made = int(sys.argv[4]), int(sys.argv[5]), 0
while made < total:
    chunk = {name: values[made % len(values):][:batch] for name, values in columns.items()}
    made += len(model.predict_batch(chunk)["prediction"])
report(made)
"""

MEMORY_PYFUNC = """
import json, sys
""" + PEAK_RSS + """
import numpy as np
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
data = np.load(sys.argv[2])
frame = pd.DataFrame({name: data[name] for name in json.loads(sys.argv[3])})
total, batch, made = int(sys.argv[4]), int(sys.argv[5]), 0
while made < total:
    start = made % len(frame)
    made += len(model.predict(frame.iloc[start:start + batch]))
report(made)
"""


def _run_child(script: str, args: list[str], *, cwd: Path) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; its last stdout line is a JSON object."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    env.update(SINGLE_THREAD)
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"child exited with {completed.returncode}: {tail}")
    return json.loads(lines[-1])


def _edgepack_unavailable(case: ModelCase) -> str | None:
    import runtime

    if case.bundle is None:
        return f"n/a (no bundle: {case.bundle_error})"
    if not hasattr(runtime, "load"):
        return "n/a (not available: runtime.load)"
    return None


def measure_cold_start(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Median over ``options.cold_runs`` fresh processes per path, alternating the two paths."""
    row = json.dumps(native_rows(case.frame, 1)[0])
    runs: dict[str, tuple[str, list[str]]] = {}
    errors: dict[str, str] = {}
    unavailable = _edgepack_unavailable(case)
    if unavailable:
        errors[EDGEPACK] = unavailable
    else:
        runs[EDGEPACK] = (COLD_EDGEPACK, [str(case.bundle), row])
    if case.registry_error:
        errors[PYFUNC] = f"n/a (model not registered: {case.registry_error})"
    else:
        runs[PYFUNC] = (COLD_PYFUNC, [case.model_uri, row])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    walls: dict[str, list[float]] = {name: [] for name in runs}
    heavy: set[str] = set()
    for _ in range(options.cold_runs):
        for name, (script, args) in runs.items():
            if name in errors:
                continue
            try:
                began = time.perf_counter()
                result = _run_child(script, args, cwd=workdir)
                walls[name].append(time.perf_counter() - began)
                seconds[name].append(float(result["seconds"]))
                heavy.update(result.get("heavy_modules", []))
            except Exception as exc:  # noqa: BLE001
                errors[name] = f"{type(exc).__name__}: {exc}"
    figures = []
    for name in (EDGEPACK, PYFUNC):
        if name in errors or not seconds.get(name):
            figures.append(error_figure(section="cold_start", path=name, unit="s", error=errors.get(name, "not measured"), model=case.name))
            continue
        wall, _ = summarize(walls[name])
        if name == EDGEPACK:
            loaded = ", ".join(sorted(heavy)) if heavy else "none"
            what = f"runtime.load + predict(dict); build-side modules imported: {loaded}"
        else:
            what = "mlflow.pyfunc.load_model(models:/...) + predict(1-row DataFrame)"
        figures.append(
            timing_figure(
                section="cold_start",
                path=name,
                seconds=seconds[name],
                unit="s",
                model=case.name,
                note=f"import to first prediction in a fresh process: {what}; whole process incl. interpreter start {wall:.3f} s (median)",
            )
        )
    set_ratios(figures, PYFUNC)
    return figures


def _write_memory_data(case: ModelCase, workdir: Path) -> tuple[Path, list[str]]:
    path = workdir / f"{case.name}-inputs.npz"
    arrays: dict[str, np.ndarray] = {}
    for name in case.frame.columns:
        column = case.frame[name]
        arrays[name] = column.to_numpy(dtype=np.float64) if name in case.numeric_columns else column.to_numpy(dtype=str)
    # Column names may hold spaces or dots; npz keys are plain strings, so that is fine.
    np.savez(path, **arrays)
    return path, list(case.frame.columns)


def measure_memory(case: ModelCase, options: BenchOptions, workdir: Path) -> list[Figure]:
    """Peak RSS of a child that loaded the model and made ``options.memory_predictions``
    predictions in batches of 1,000 rows; median over ``options.memory_runs`` runs per path."""
    data, names = _write_memory_data(case, workdir)
    args_tail = [str(data), json.dumps(names), str(options.memory_predictions), str(MEMORY_BATCH)]
    runs: dict[str, tuple[str, list[str]]] = {}
    errors: dict[str, str] = {}
    unavailable = _edgepack_unavailable(case)
    if unavailable:
        errors[EDGEPACK] = unavailable
    else:
        runs[EDGEPACK] = (MEMORY_EDGEPACK, [str(case.bundle), *args_tail])
    if case.registry_error:
        errors[PYFUNC] = f"n/a (model not registered: {case.registry_error})"
    else:
        runs[PYFUNC] = (MEMORY_PYFUNC, [case.model_uri, *args_tail])
    peaks: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(options.memory_runs):
        for name, (script, args) in runs.items():
            if name in errors:
                continue
            try:
                result = _run_child(script, args, cwd=workdir)
                if int(result["predictions"]) < options.memory_predictions:
                    raise BenchError(f"child made {result['predictions']} predictions, expected {options.memory_predictions}")
                peaks[name].append(float(result["peak_rss_kb"]) / 1024)
            except Exception as exc:  # noqa: BLE001
                errors[name] = f"{type(exc).__name__}: {exc}"
    figures = []
    for name in (EDGEPACK, PYFUNC):
        if name in errors or not peaks.get(name):
            figures.append(error_figure(section="memory", path=name, unit="MB", error=errors.get(name, "not measured"), model=case.name))
            continue
        median, p99 = summarize(peaks[name])
        figures.append(
            Figure(
                section="memory",
                path=name,
                unit="MB",
                model=case.name,
                median=median,
                p99=p99,
                samples=len(peaks[name]),
                note=f"peak RSS (VmHWM of the child; ru_maxrss would include the parent's) after loading and {options.memory_predictions:,} predictions in batches of {MEMORY_BATCH:,}",
            )
        )
    set_ratios(figures, PYFUNC)
    return figures
