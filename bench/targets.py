"""The goals from the issue, checked against the figures of the same run."""

from __future__ import annotations

from .buffering import CHUNK_RAW, OVERHEAD, OVERHEAD_ALL_IN, OVERHEAD_FLUSH, POWER, SYNC, SYNC_WORKERS
from .figures import Figure, Report, Target
from .footprint import BUILD, DEVICE
from .floors import STRINGS, TREES, UNREWRITTEN
from .inference import FLOOR, HANDMADE, PREDICT_BATCH, PREDICT_DICT, PYFUNC
from .process import EDGEPACK
from .process import PYFUNC as COLD_PYFUNC

RF_MODEL = "forest"


def _median(figure: Figure | None) -> float | None:
    return figure.median if figure is not None and figure.ok else None


def _ratio(numerator: Figure | None, denominator: Figure | None) -> float | None:
    top, bottom = _median(numerator), _median(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def _mark(target: Target, figure: Figure | None) -> Target:
    if figure is not None:
        figure.target = target.name
        figure.verdict = target.verdict
    return target


def _rate(figure: Figure | None) -> str:
    value = _median(figure)
    return "not measured" if value is None else f"{value:,.0f} records/s"


def _store_ceiling(report: Report) -> str:
    from .ingest import STORE

    median = _median(report.find("telemetry", STORE))
    if not median:
        return "not measured"
    return f"{1e6 / median / 1000:.1f}k records/s ({median:.1f} µs per record)"


def _times(ratio: float | None) -> str:
    return "not measured" if ratio is None else f"{ratio:.2f}x"


def _missing(*figures: Figure | None) -> str:
    parts = []
    for figure in figures:
        if figure is None:
            parts.append("figure not measured in this run")
        elif not figure.ok:
            parts.append(f"{figure.path}: {figure.error}")
    return "; ".join(parts)


def check_targets(report: Report, models: list[str]) -> list[Target]:
    """Every target whose figures belong to this run; n/a when one of them is missing."""
    targets: list[Target] = []
    for model in models:
        edge = report.find("latency", PREDICT_DICT, model)
        floor = report.find("latency", FLOOR, model)
        if edge is None and floor is None:
            continue
        targets.append(
            _mark(
                Target(
                    name=f"single_row_vs_floor[{model}]",
                    description=f"predict(dict) single row within 1.3x of the bare-ORT floor ({model})",
                    value=_ratio(edge, floor),
                    threshold=1.3,
                    comparison="<=",
                    unit="x",
                    detail=_missing(edge, floor)
                    or "predict(dict) median / bare onnxruntime median"
                    + (
                        f"; / the floor with strings in the graph (before the runtime encoded them): {_times(_ratio(edge, old_floor))}"
                        if (old_floor := report.find("latency", STRINGS, model)) is not None
                        else ""
                    ),
                ),
                edge,
            )
        )
    for model in models:
        batch = report.find("latency", PREDICT_BATCH, model)
        floor = report.find("latency", FLOOR, model)
        if batch is None and floor is None:
            continue
        targets.append(
            _mark(
                Target(
                    name=f"one_row_batch_vs_floor[{model}]",
                    description=f"predict_batch with one row within 2x of the bare-ORT floor ({model})",
                    value=_ratio(batch, floor),
                    threshold=2.0,
                    comparison="<=",
                    unit="x",
                    detail=_missing(batch, floor) or "predict_batch (one row) median / bare onnxruntime median",
                ),
                batch,
            )
        )
    edge = report.find("latency", PREDICT_DICT, RF_MODEL)
    handmade = report.find("latency", HANDMADE, RF_MODEL)
    pyfunc = report.find("latency", PYFUNC, RF_MODEL)
    if RF_MODEL in models and (edge, handmade, pyfunc) != (None, None, None):
        targets.append(
            _mark(
                Target(
                    name="single_row_vs_handmade[forest]",
                    description="predict(dict) single row faster than the hand-made skl2onnx path (31 columns)",
                    value=_ratio(edge, handmade),
                    threshold=1.0,
                    comparison="<=",
                    unit="x",
                    detail=_missing(edge, handmade) or "predict(dict) median / hand-made median",
                ),
                handmade,
            )
        )
        trees = report.find("latency", TREES, RF_MODEL)
        if trees is not None:
            floor, old = report.find("latency", FLOOR, RF_MODEL), report.find("latency", UNREWRITTEN, RF_MODEL)
            strings = report.find("latency", STRINGS, RF_MODEL)
            targets.append(
                _mark(
                    Target(
                        name="single_row_vs_trees[forest]",
                        description="predict(dict) single row within 2x of the forest's trees alone on encoded input",
                        value=_ratio(edge, trees),
                        threshold=2.0,
                        comparison="<=",
                        unit="x",
                        detail=_missing(edge, trees)
                        or (
                            "predict(dict) median / trees-alone median; floor / trees alone: "
                            f"{_times(_ratio(floor, trees))} shipped graph, "
                            + (f"{_times(_ratio(strings, trees))} strings in the graph, " if strings is not None else "")
                            + f"{_times(_ratio(old, trees))} graph as converted"
                        ),
                    ),
                    trees,
                )
            )
        targets.append(
            _mark(
                Target(
                    name="single_row_vs_pyfunc[forest]",
                    description="predict(dict) single row at least 100x faster than mlflow.pyfunc (RandomForest pipeline)",
                    value=_ratio(pyfunc, edge),
                    threshold=100.0,
                    comparison=">=",
                    unit="x",
                    detail=_missing(pyfunc, edge) or "mlflow.pyfunc median / predict(dict) median",
                ),
                pyfunc,
            )
        )
    for model in models:
        edge = report.find("cold_start", EDGEPACK, model)
        pyfunc = report.find("cold_start", COLD_PYFUNC, model)
        if edge is None and pyfunc is None:
            continue
        targets.append(
            _mark(
                Target(
                    name=f"cold_start_vs_pyfunc[{model}]",
                    description=f"cold start at least 5x faster than mlflow.pyfunc ({model})",
                    value=_ratio(pyfunc, edge),
                    threshold=5.0,
                    comparison=">=",
                    unit="x",
                    detail=_missing(pyfunc, edge) or "pyfunc median / edgepack median",
                ),
                pyfunc,
            )
        )
        targets.append(
            _mark(
                Target(
                    name=f"cold_start_under_half_second[{model}]",
                    description=f"edgepack cold start under 0.5 s ({model})",
                    value=_median(edge),
                    threshold=0.5,
                    comparison="<=",
                    unit="s",
                    detail=_missing(edge) or "median, import to first prediction",
                ),
                edge,
            )
        )
    device = report.find("footprint", DEVICE)
    build = report.find("footprint", BUILD)
    if device is not None or build is not None:
        targets.append(
            _mark(
                Target(
                    name="device_env_vs_build_env",
                    description="device environment at most a quarter of the build environment",
                    value=_ratio(device, build),
                    threshold=0.25,
                    comparison="<=",
                    unit="x",
                    detail=_missing(device, build) or "device venv bytes / build venv bytes",
                ),
                device,
            )
        )
    power = report.find("telemetry", POWER)
    if power is not None:
        targets.append(
            _mark(
                Target(
                    name="record_rate_power",
                    description='record() at least 200,000/s with durability="power"',
                    value=_median(power),
                    threshold=200_000.0,
                    comparison=">=",
                    unit="records/s",
                    detail=_missing(power) or f"median rate; ceiling (raw SQLite inserts of the same chunks): {_rate(report.find('telemetry', CHUNK_RAW))}",
                ),
                power,
            )
        )
    # Measured to a collector of two worker processes (``--workers 2``, what a collector
    # that must keep up with many devices runs); the one-process collector's rate beside it.
    sync, single = report.find("telemetry", SYNC_WORKERS), report.find("telemetry", SYNC)
    if sync is not None:
        one_process = f"{_median(single) / 1000:.1f}k records/s" if _median(single) else "not measured"
        targets.append(
            _mark(
                Target(
                    name="sync_rate",
                    description="sync at least 50,000 records/s end to end (collector --workers 2)",
                    value=_median(sync),
                    threshold=50_000.0,
                    comparison=">=",
                    unit="records/s",
                    detail=_missing(sync)
                    or (
                        f"median rate; to a one-process collector: {one_process}; "
                        f"ceiling (the collector's SQLite store alone): {_store_ceiling(report)}"
                    ),
                ),
                sync,
            )
        )
    overhead = report.find("telemetry", OVERHEAD_ALL_IN, RF_MODEL)
    if overhead is not None:
        targets.append(
            _mark(
                Target(
                    name="telemetry_overhead[forest]",
                    description="telemetry adds at most 5 µs per 31-feature prediction",
                    value=_median(overhead),
                    threshold=5.0,
                    comparison="<=",
                    unit="us",
                    detail=_missing(overhead) or (
                        "all in: predictions + flush() with telemetry minus without, per prediction (median over rounds); "
                        f"in the caller alone: {_median(report.find('telemetry', OVERHEAD, RF_MODEL)) or float('nan'):.1f} µs; "
                        f"the block's final flush() in all in: {_median(report.find('telemetry', OVERHEAD_FLUSH, RF_MODEL)) or float('nan'):.2f} µs"
                    ),
                ),
                overhead,
            )
        )
    built = next((f for f in report.figures if f.section == "build" and f.path == "edgepack build (end to end)"), None)
    if built is not None:
        targets.append(
            _mark(
                Target(
                    name=f"build_small_model[{built.model}]",
                    description="edgepack build of a small model at most 3 s end to end (fresh process)",
                    value=_median(built),
                    threshold=3.0,
                    comparison="<=",
                    unit="s",
                    detail=_missing(built) or "median wall time of fresh `edgepack build` processes",
                ),
                built,
            )
        )
    return targets
