"""One benchmark run: train, register and bundle the models, then measure every section."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from . import buffering, build_phases, footprint, inference, process
from .figures import Figure, Report, error_figure
from .options import BenchOptions
from .probe import probe_ms
from .targets import check_targets
from .zoo import BUILDERS, ModelCase, Registry, build, train

SECTIONS = ("latency", "throughput", "cold_start", "memory", "telemetry", "footprint", "serve", "build", "fleet", "rollout", "monitoring")
TELEMETRY_MODEL = "forest"
REPO = Path(__file__).resolve().parents[1]
VERSIONED = ("edgepack", "onnxruntime", "numpy", "scikit-learn", "skl2onnx", "onnx", "mlflow", "pandas", "sqlite-utils", "httpx", "protobuf")


def environment() -> dict[str, Any]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def _guard(report: Report, section: str, what: str, fn: Callable[[], list[Figure]], model: str | None = None) -> None:
    """Run one measurement; a crash becomes an error figure, never the end of the run."""
    try:
        report.figures.extend(fn())
    except Exception as exc:  # noqa: BLE001
        report.figures.append(error_figure(section=section, path=what, unit="", error=exc, model=model))


@contextmanager
def _phase(report: Report, name: str) -> Iterator[None]:
    # The machine's speed as the phase begins (bench.probe), outside the phase's own time.
    report.environment.setdefault("probe_ms", {}).setdefault(name, []).append(round(probe_ms(), 2))
    began = time.perf_counter()
    try:
        yield
    finally:
        report.phases[name] = report.phases.get(name, 0.0) + time.perf_counter() - began


def run_suite(
    options: BenchOptions,
    *,
    sections: Collection[str] = SECTIONS,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
) -> Report:
    """Run the benchmark sections in ``sections`` and return the report (never raises for a
    failing measurement: the figure carries the error)."""
    # Loaded first so that the limit below reaches the OpenMP runtime scikit-learn uses.
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    began = time.perf_counter()
    report = Report(mode=options.mode, environment=environment(), started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    report.notes.append(
        "Every path computes on one thread: onnxruntime with the runtime's session options (1 intra-op thread), "
        "scikit-learn / mlflow.pyfunc with OpenMP and BLAS limited to 1 thread, so figures compare cost per core."
    )
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-", dir=workdir) as tmp, threadpool_limits(limits=1):
        root = Path(tmp)
        with _phase(report, "prepare"):
            # The fleet section needs no models: --only fleet trains none.
            cases = _prepare(options, root, report, log) if set(sections) - {"fleet"} else []
        by_name = {case.name: case for case in cases}
        if "footprint" in sections:
            report.figures.extend(footprint.bundle_figures(cases))
        if {"latency", "throughput"} & set(sections):
            for case in cases:
                log(f"[bench] loading the paths for {case.name}")
                try:
                    with _phase(report, "load paths"):
                        contenders = inference.Contenders(case)
                except Exception as exc:  # noqa: BLE001
                    for section in ("latency", "throughput"):
                        report.figures.append(error_figure(section=section, path="all paths", unit="", error=exc, model=case.name))
                    continue
                if "latency" in sections:
                    log(f"[bench] single-row latency: {case.name}")
                    with _phase(report, "latency"):
                        _guard(report, "latency", "all paths", lambda: inference.measure_latency(case, contenders, options), case.name)
                if "throughput" in sections:
                    log(f"[bench] batch throughput: {case.name}")
                    with _phase(report, "throughput"):
                        _guard(report, "throughput", "all paths", lambda: inference.measure_throughput(case, contenders, options), case.name)
                del contenders
        for name in options.cold_models:
            case = by_name.get(name)
            if case is None:
                continue
            if "cold_start" in sections:
                log(f"[bench] cold start: {name} ({options.cold_runs} runs per path)")
                with _phase(report, "cold_start"):
                    _guard(report, "cold_start", "all paths", lambda: process.measure_cold_start(case, options, root), name)
            if "memory" in sections:
                log(f"[bench] peak RSS: {name}")
                with _phase(report, "memory"):
                    _guard(report, "memory", "all paths", lambda: process.measure_memory(case, options, root), name)
        if "build" in sections and BUILD_MODEL in by_name and by_name[BUILD_MODEL].version:
            log(f"[bench] edgepack build: {BUILD_MODEL} ({options.cold_runs} fresh processes)")
            with _phase(report, "build"):
                _guard(report, "build", "edgepack build", lambda: build_phases.measure_build(by_name[BUILD_MODEL], _registry_uri(root), options, root), BUILD_MODEL)
        if "telemetry" in sections and TELEMETRY_MODEL in by_name:
            case = by_name[TELEMETRY_MODEL]
            with _phase(report, "telemetry"):
                log("[bench] telemetry: record() rate")
                _guard(report, "telemetry", "record rate", lambda: buffering.measure_record_rate(case, options, root))
                log("[bench] telemetry: sync to a collector on loopback")
                _guard(report, "telemetry", buffering.SYNC, lambda: buffering.measure_sync(case, options, root))
                from . import ingest

                log("[bench] telemetry: collector ingest CPU per record, per body kind")
                _guard(report, "telemetry", ingest.PACKED_ZSTD, lambda: ingest.measure_ingest(case, options, root))
                log("[bench] telemetry: cost per prediction")
                _guard(report, "telemetry", buffering.OVERHEAD, lambda: buffering.measure_overhead(case, options, root), case.name)
        if "serve" in sections and TELEMETRY_MODEL in by_name:
            from . import serving

            log("[bench] serve: round trip over the unix socket and loopback, concurrent clients")
            with _phase(report, "serve"):
                _guard(report, "serve", serving.UNIX, lambda: serving.measure_serve(by_name[TELEMETRY_MODEL], options, root), TELEMETRY_MODEL)
        if "rollout" in sections and TELEMETRY_MODEL in by_name and by_name[TELEMETRY_MODEL].bundle:
            from . import rollout

            log("[bench] rollout: 1,000 devices polling the home service, then publish until all are active")
            with _phase(report, "rollout"):
                _guard(report, "rollout", rollout.POLL, lambda: rollout.measure_rollout(by_name[TELEMETRY_MODEL], options, root))
        if "monitoring" in sections and TELEMETRY_MODEL in by_name:
            from . import monitoring

            log(f"[bench] monitoring: drift report over {options.monitor_records:,} stored records")
            with _phase(report, "monitoring"):
                _guard(report, "monitoring", monitoring.REPORT, lambda: monitoring.measure_monitoring(by_name[TELEMETRY_MODEL], options, root), TELEMETRY_MODEL)
        if "footprint" in sections:
            if options.footprint == "skip":
                report.notes.append(
                    f"Footprint of the device and build venvs skipped in {options.mode} mode "
                    "(the full mode measures both; --footprint device|all forces it)."
                )
            else:
                if options.footprint == "device":
                    report.notes.append(f"Footprint: only the device venv in {options.mode} mode; the build venv was not created.")
                log(f"[bench] footprint: creating venvs ({options.footprint}); reuses pip's cache")
                with _phase(report, "footprint"):
                    _guard(report, "footprint", "venvs", lambda: footprint.measure_venvs(REPO, root, build=options.footprint == "all"))
        if "fleet" in sections:
            from . import fleet

            (root / "fleet").mkdir()
            with _phase(report, "fleet"):
                _guard(report, "fleet", "all configurations", lambda: fleet.measure_fleet(fleet.PRESETS[options.mode], root / "fleet", log=log))
    report.targets = check_targets(report, [case.name for case in cases])
    if "serve" in sections:
        from . import serving

        report.targets += serving.targets(report)
    if "rollout" in sections:
        from . import rollout

        report.targets += rollout.targets(report)
    if "monitoring" in sections:
        from . import monitoring

        report.targets += monitoring.targets(report)
    report.environment["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report.duration_s = time.perf_counter() - began
    return report


BUILD_MODEL = "logreg"
"""The small model whose ``edgepack build`` is timed (the target: at most 3 s end to end)."""


def _registry_uri(root: Path) -> str:
    return f"sqlite:///{root / 'registry' / 'mlflow.db'}"  # where _prepare's Registry lives


def _prepare(options: BenchOptions, root: Path, report: Report, log: Callable[[str], None]) -> list[ModelCase]:
    cases: list[ModelCase] = []
    for name in BUILDERS:
        log(f"[bench] training {name} on {options.train_rows:,} rows")
        try:
            cases.append(train(name, options.train_rows))
        except Exception as exc:  # noqa: BLE001
            report.notes.append(f"training {name} failed: {type(exc).__name__}: {exc}")
    log("[bench] registering the models in a temporary MLflow registry (SQLite)")
    try:
        registry = Registry(root / "registry")
    except Exception as exc:  # noqa: BLE001
        for case in cases:
            case.registry_error = f"{type(exc).__name__}: {exc}"
            case.bundle_error = "no registry"
        return cases
    bundles = root / "bundles"
    bundles.mkdir()
    for case in cases:
        try:
            registry.register(case)
        except Exception as exc:  # noqa: BLE001
            case.registry_error = f"{type(exc).__name__}: {exc}"
            case.bundle_error = "model not registered"
            continue
        log(f"[bench] building the bundle for {case.name}")
        build(case, registry, bundles)
        if case.bundle_error:
            report.notes.append(f"{case.name}: {case.bundle_error}")
    for case in cases:
        report.models[case.name] = {**case.details, "registered": case.model_uri if case.version else None, "bundle_error": case.bundle_error}
    return cases
