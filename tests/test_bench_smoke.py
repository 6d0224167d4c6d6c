"""The benchmark suite (``python -m bench``): its parts, and a CI smoke run of ``--quick``.

Benchmarks report and tests assert, so nothing here checks a speed: the smoke run checks
that every section produced its figures with the fields the results file promises, and the
unit tests check that what the suite measures is what it claims to measure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.figures import Figure, Report, Target, set_ratios, timing_figure
from bench.monitoring import FOLD as MONITOR_FOLD, RAW as MONITOR_RAW, REPORT as MONITOR_REPORT
from bench.floors import PATHS as FLOOR_PARTS
from bench.inference import FLOOR, HANDMADE, PATHS, PREDICT_BATCH, PREDICT_DICT, PYFUNC, SKLEARN, numpy_columns, pack
from bench.table import render
from bench.timing import interleave

ROOT = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 900
MODELS = ("logreg", "forest", "hgb")
FIGURE_KEYS = {"section", "path", "unit", "model", "median", "p99", "samples", "reference", "ratio", "target", "verdict", "error", "note"}
TARGET_KEYS = {"name", "description", "value", "threshold", "comparison", "unit", "verdict", "detail"}


# -- the parts ------------------------------------------------------------------------------


def test_interleave_rotates_paths_and_keeps_a_failing_paths_error() -> None:
    calls: list[str] = []

    def path(name: str) -> Callable[[], None]:
        return lambda: calls.append(name)

    def broken() -> None:
        if calls.count("b") >= 3:
            raise RuntimeError("disk on fire")
        calls.append("b")

    timings = interleave({"a": path("a"), "b": broken, "c": path("c")}, rounds=3, calls=2, warmup=1)

    assert set(timings.seconds) == {"a", "c"}
    assert len(timings.seconds["a"]) == len(timings.seconds["c"]) == 6
    assert all(s >= 0 for s in timings.seconds["a"])
    assert isinstance(timings.errors["b"], RuntimeError) and "disk on fire" in str(timings.errors["b"])
    # After one warm-up call each, round 0 runs a, b, c; round 1 starts with b, round 2 with c.
    timed = calls[3:]
    assert timed[:6] == ["a", "a", "b", "b", "c", "c"]
    assert timed[6:10] == ["c", "c", "a", "a"]  # b failed at the start of round 1
    assert timed[10:] == ["c", "c", "a", "a"]


def test_rates_ratios_and_targets_are_computed_from_costs() -> None:
    fast = timing_figure(section="throughput", path="fast", seconds=[0.5, 0.5, 0.5], unit="rows/s", per_call_units=1000)
    slow = timing_figure(section="throughput", path="slow", seconds=[2.0, 2.0, 2.0], unit="rows/s", per_call_units=1000)
    set_ratios([fast, slow], "fast")
    assert fast.median == pytest.approx(2000.0) and slow.median == pytest.approx(500.0)
    assert fast.ratio == pytest.approx(1.0) and slow.ratio == pytest.approx(4.0)  # four times the time per row

    latency = timing_figure(section="latency", path="x", seconds=[1e-5] * 99 + [1e-3], unit="us")
    assert latency.median == pytest.approx(10.0)
    assert latency.p99 > latency.median

    assert Target(name="t", description="", value=1.4, threshold=1.5, comparison="<=", unit="x").verdict == "meets"
    assert Target(name="t", description="", value=1.6, threshold=1.5, comparison="<=", unit="x").verdict == "misses"
    assert Target(name="t", description="", value=99.0, threshold=100.0, comparison=">=", unit="x").verdict == "misses"
    assert Target(name="t", description="", value=None, threshold=100.0, comparison=">=", unit="x").verdict == "n/a"


def test_a_failed_figure_is_printed_with_its_error_not_dropped() -> None:
    report = Report(mode="test", environment={})
    report.figures = [
        Figure(section="latency", path=FLOOR, unit="us", model="m", median=10.0, p99=12.0, samples=5),
        Figure(section="latency", path=PREDICT_DICT, unit="us", model="m", error="n/a (not available: runtime.load)"),
    ]
    set_ratios(report.figures, FLOOR)
    table = render(report)
    assert "n/a (not available: runtime.load)" in table
    assert "10.0 µs" in table and "ref" in table
    assert json.loads(json.dumps(report.to_json()))["figures"][1]["error"] == "n/a (not available: runtime.load)"


def test_floor_feed_packs_inputs_as_the_runtime_does(make_bundle: Callable[[str], Any]) -> None:
    """The bare-ORT floor is only a floor if it computes the same thing as edgepack."""
    import onnxruntime as ort

    import runtime
    from bench.inference import session_options

    built = make_bundle("binary")
    frame = built.frame.head(40)
    bundle = runtime.read_bundle(built.path)
    session = ort.InferenceSession(bundle.files["model.onnx"], session_options(), providers=["CPUExecutionProvider"])
    outputs = bundle.manifest["outputs"]
    floor = dict(zip([o.name for o in session.get_outputs()], session.run(None, pack(bundle.manifest, numpy_columns(frame)))))

    edge = runtime.load(built.path).predict_batch(numpy_columns(frame))

    np.testing.assert_allclose(floor[outputs["probabilities"]], edge["probabilities"], rtol=1e-6, atol=1e-7)
    expected = built.model.predict_proba(frame)
    np.testing.assert_allclose(floor[outputs["probabilities"]], expected, atol=1e-4)


# -- the smoke run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    )
    assert completed.returncode == 0, f"python -m bench --quick exited {completed.returncode}:\n{completed.stderr[-3000:]}"
    return json.loads(out.read_text()), completed.stdout


def _figures(results: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [f for f in results["figures"] if f["section"] == section]


@pytest.mark.slow
def test_the_record_rate_runs_in_a_process_without_the_benchmarks_heavy_modules(tmp_path: Path) -> None:
    # The benchmark's own process holds pandas, scikit-learn and MLflow; a device does not,
    # and telemetry's figures are a device's. The script reports what it found loaded.
    rows = [{"temp c": 20.5 + i, "region": "north"} for i in range(4)]
    outputs = [{"prediction": 1, "probabilities": {"0": 0.25, "1": 0.75}}] * 4
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"workdir": str(tmp_path), "count": 300, "rounds": 2, "model": "m", "rows": rows, "outputs": outputs}))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "record_device.py"), "record", str(spec)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["heavy_modules"] == [] and measured["errors"] == {}
    assert {name: len(seconds) for name, seconds in measured["seconds"].items()} == {
        'Buffer.record durability="power"': 2,
        'Buffer.record durability="process"': 2,
        "raw sqlite3 executemany": 2,
        "raw sqlite3 chunk inserts": 2,
    }
    assert all(s > 0 for seconds in measured["seconds"].values() for s in seconds)
    assert not list(tmp_path.glob("record-*.db*"))  # each round's database is deleted after it


def test_quick_run_writes_every_figure_with_its_fields(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert results["schema"] == 1 and results["mode"] == "quick"
    assert results["environment"]["cpu_count"] >= 1 and results["environment"]["versions"]["onnxruntime"]
    # The machine's speed before each phase: every phase of the run probed, once per entry.
    probes = results["environment"]["probe_ms"]
    assert {"prepare", "latency", "throughput", "telemetry"} <= set(probes), probes
    assert len(probes["latency"]) == len(MODELS) and all(ms > 0 for timings in probes.values() for ms in timings)
    assert set(results["models"]) == set(MODELS)
    for figure in results["figures"]:
        assert set(figure) == FIGURE_KEYS, figure
        assert figure["error"] is None, f"{figure['section']} / {figure['model']} / {figure['path']}: {figure['error']}"
        assert isinstance(figure["median"], (float, int)) and math.isfinite(figure["median"]), figure
        assert isinstance(figure["p99"], float) and figure["samples"] >= 1, figure
    for section in ("latency", "throughput"):
        measured = {(f["model"], f["path"]) for f in _figures(results, section)}
        # The floor's parts (trees alone, the graph as converted) exist for the forest only.
        parts = {("forest", p) for p in FLOOR_PARTS} if section == "latency" else set()
        assert measured == {(m, p) for m in MODELS for p in PATHS} | parts, section
        for figure in _figures(results, section):
            assert figure["median"] > 0 and figure["reference"] == FLOOR and figure["ratio"] > 0, figure
            if figure["path"] == FLOOR:
                assert figure["ratio"] == pytest.approx(1.0)
    latency = _figures(results, "latency")
    # A slow path gets fewer calls per round (time budget), but every path runs in every round.
    assert all(f["samples"] >= 10 for f in latency), "quick mode runs 10 rounds of single-row calls"
    assert max(f["samples"] for f in latency) == 300
    assert {(f["model"], f["path"]) for f in _figures(results, "cold_start")} == {("forest", "edgepack"), ("forest", "mlflow.pyfunc")}
    assert {(f["model"], f["path"]) for f in _figures(results, "memory")} == {("forest", "edgepack"), ("forest", "mlflow.pyfunc")}
    telemetry = {f["path"] for f in _figures(results, "telemetry")}
    assert {
        'Buffer.record durability="power"',
        'Buffer.record durability="process"',
        "raw sqlite3 executemany",
        "SyncService.sync_once to collector",
        "SyncService.sync_once to collector --workers 2",
        "telemetry cost per prediction (caller)",
        "telemetry cost per prediction (all in)",
    } <= telemetry
    bundles = [f for f in _figures(results, "footprint") if f["path"] == "bundle .edgepkg"]
    assert {f["model"] for f in bundles} == set(MODELS) and all(f["median"] > 0 for f in bundles)
    assert any("skipped in quick mode" in note for note in results["notes"])
    assert {PREDICT_BATCH, HANDMADE, SKLEARN, PYFUNC} <= {f["path"] for f in latency}
    assert {f["path"] for f in _figures(results, "monitoring")} == {MONITOR_FOLD, MONITOR_REPORT, MONITOR_RAW}


@pytest.mark.slow
def test_quick_run_marks_every_target_and_prints_the_table(quick_run: tuple[dict[str, Any], str]) -> None:
    results, stdout = quick_run
    probed = stdout.split("Machine probe", 1)[1].split("\n", 1)[0]
    assert all(f"{name} " in probed for name in results["environment"]["probe_ms"]), probed
    names = {t["name"] for t in results["targets"]}
    assert names == {
        *(f"single_row_vs_floor[{m}]" for m in MODELS),
        *(f"one_row_batch_vs_floor[{m}]" for m in MODELS),
        "single_row_vs_handmade[forest]",
        "single_row_vs_pyfunc[forest]",
        "single_row_vs_trees[forest]",
        "cold_start_vs_pyfunc[forest]",
        "cold_start_under_half_second[forest]",
        "record_rate_power",
        "sync_rate",
        "telemetry_overhead[forest]",
        "serve_added_latency[forest]",
        "serve_16_clients_no_error[forest]",
        "build_small_model[logreg]",
        "rollout_1000_devices_cpu_to_spare",
    }
    for target in results["targets"]:
        assert set(target) == TARGET_KEYS
        assert target["verdict"] in ("meets", "misses"), target
        holds = target["value"] <= target["threshold"] if target["comparison"] == "<=" else target["value"] >= target["threshold"]
        assert target["verdict"] == ("meets" if holds else "misses"), target
        marked = [f for f in results["figures"] if f["target"] == target["name"]]
        assert len(marked) == 1 and marked[0]["verdict"] == target["verdict"], target["name"]
        assert f"{target['verdict']} ({target['name']})" in stdout
    assert "## Single-row latency" in stdout and "## Targets" in stdout
    assert "results written to" in stdout


def test_fleet_smoke_run_fills_every_configuration_and_the_export(postgres_server: Any, tmp_path: Path) -> None:
    from bench.fleet import CONFIGS, PRESETS, measure_fleet

    figures = measure_fleet(PRESETS["smoke"], tmp_path, server=postgres_server)
    by_path = {figure.path: figure for figure in figures}
    assert [figure.error for figure in figures if figure.error] == []
    for name in CONFIGS:
        assert by_path[f"{name}: ingest"].median > 0
        assert by_path[f"{name}: ingest"].note.startswith("50 records in ")  # 10 devices x 1 batch x 5 records, all stored
        latency = by_path[f"{name}: batch latency"]
        assert latency.samples == 10 and 0 < latency.median <= latency.p99
        assert by_path[f"{name}: collector CPU"].median >= 0  # clock ticks: a tiny run may round to 0
    assert by_path["postgres, 2 collectors: PostgreSQL server CPU"].unit == "us/record"
    for store in ("sqlite", "postgres"):
        assert by_path[f"export to Parquet ({store})"].note.startswith("50 records")
        assert by_path[f"DuckDB scan of the export ({store})"].median > 0
