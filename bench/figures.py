"""What a run produces: figures (one measured quantity each), targets, and the report file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_SCHEMA = 1

# Units in which a bigger number is better; everything else (time, bytes) is better smaller.
RATE_UNITS = frozenset({"rows/s", "records/s"})


@dataclass(kw_only=True)
class Figure:
    """One measured quantity for one path (e.g. single-row latency of ``predict(dict)`` on ``forest``)."""

    section: str
    """``latency``, ``throughput``, ``cold_start``, ``memory``, ``telemetry`` or ``footprint``."""
    path: str
    """What was measured (``edgepack predict(dict)``, ``bare onnxruntime``, ``mlflow.pyfunc`` ...)."""
    unit: str
    """``us``, ``ms``, ``s``, ``rows/s``, ``records/s`` or ``MB``."""
    model: str | None = None
    """The model case, when the figure belongs to one."""
    median: float | None = None
    """Median over the samples; for rates, the rate at the median time."""
    p99: float | None = None
    """99th percentile (the slow tail); for rates, the rate at the 99th-percentile time."""
    samples: int = 0
    """How many measurements the median and p99 come from."""
    reference: str | None = None
    """The path this figure is compared with in the same run."""
    ratio: float | None = None
    """This figure's cost divided by the reference's cost (time, or size): 2.0 = twice as slow or big."""
    target: str | None = None
    """Name of the target this figure is checked against, if any."""
    verdict: str | None = None
    """``meets`` / ``misses`` the target; ``n/a`` when the figure could not be measured."""
    error: str | None = None
    """Why the figure could not be measured (the measurement failed or the feature is missing)."""
    note: str | None = None
    """How the figure was measured, where that is not obvious from ``path``."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.median is not None


@dataclass(kw_only=True)
class Target:
    """A goal from the issue, checked against figures of the same run."""

    name: str
    """Short identifier (``single_row_vs_floor`` ...)."""
    description: str
    """The goal in words."""
    value: float | None
    """The measured quantity the goal is about (a ratio, a time, a rate)."""
    threshold: float
    """The bound ``value`` is compared with."""
    comparison: str
    """``<=`` or ``>=``: how ``value`` must relate to ``threshold``."""
    unit: str
    """Unit of ``value`` and ``threshold``."""
    verdict: str = "n/a"
    """``meets``, ``misses``, or ``n/a`` when a figure it needs is missing."""
    detail: str | None = None
    """Which figures the value came from, or why it is n/a."""

    def __post_init__(self) -> None:
        if self.value is None or not math.isfinite(self.value):
            self.verdict = "n/a"
        elif self.comparison == "<=":
            self.verdict = "meets" if self.value <= self.threshold else "misses"
        else:
            self.verdict = "meets" if self.value >= self.threshold else "misses"


@dataclass(kw_only=True)
class Report:
    """Everything one run measured, as written to ``results.json``."""

    mode: str
    """The preset that was run."""
    environment: dict[str, Any]
    """Python, platform, CPU count, load average, library versions."""
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Skipped sections and caveats, printed under the table."""
    models: dict[str, Any] = field(default_factory=dict)
    """Per model case: what it is (estimator, columns, trees) and its bundle."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the run took (preparation, each section)."""
    started_at: str = ""
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": RESULTS_SCHEMA,
            "mode": self.mode,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "environment": self.environment,
            "models": self.models,
            "figures": [_clean(asdict(f)) for f in self.figures],
            "targets": [_clean(asdict(t)) for t in self.targets],
            "notes": list(self.notes),
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, sort_keys=False, allow_nan=False)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)

    def find(self, section: str, path: str, model: str | None = None) -> Figure | None:
        for figure in self.figures:
            if figure.section == section and figure.path == path and figure.model == model:
                return figure
        return None


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a non-finite number becomes null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in obj.items()}


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Median and 99th percentile of ``values`` (numpy's linear interpolation)."""
    if not values:
        raise ValueError("no samples to summarize")
    array = np.asarray(values, dtype=np.float64)
    return float(np.median(array)), float(np.percentile(array, 99))


def timing_figure(
    *,
    section: str,
    path: str,
    seconds: Sequence[float],
    unit: str,
    model: str | None = None,
    per_call_units: float = 1.0,
    note: str | None = None,
) -> Figure:
    """A figure from per-call times. ``unit`` ``us``/``ms``/``s`` reports time; a rate unit reports
    ``per_call_units`` (rows or records per call) divided by the time."""
    median_s, p99_s = summarize(seconds)
    if unit in RATE_UNITS:
        median, p99 = per_call_units / median_s, per_call_units / p99_s
    else:
        scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
        median, p99 = median_s * scale, p99_s * scale
    return Figure(section=section, path=path, unit=unit, model=model, median=median, p99=p99, samples=len(seconds), note=note)


def error_figure(*, section: str, path: str, unit: str, error: BaseException | str, model: str | None = None) -> Figure:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return Figure(section=section, path=path, unit=unit, model=model, error=first_line[:300])


def cost(figure: Figure) -> float | None:
    """The figure's median as a cost (bigger is worse): time or size as is, rates inverted."""
    if not figure.ok or figure.median is None or figure.median <= 0:
        return None
    return 1.0 / figure.median if figure.unit in RATE_UNITS else figure.median


def set_ratios(figures: Sequence[Figure], reference_path: str) -> None:
    """Fill ``reference``/``ratio`` of every figure against the figure of ``reference_path`` with the
    same section and model."""
    by_key = {(f.section, f.model): f for f in figures if f.path == reference_path}
    for figure in figures:
        reference = by_key.get((figure.section, figure.model))
        if reference is None:
            continue
        figure.reference = reference_path
        mine, theirs = cost(figure), cost(reference)
        if mine is not None and theirs is not None:
            figure.ratio = mine / theirs
