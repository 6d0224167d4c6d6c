"""A regression bundle: prediction drift on the baseline's prediction bins, and live MAE
and RMSE from labels, checked against numpy on the same records."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

import runtime
from home.monitoring import build_report, register_manifest
from home.monitoring.drift import psi
from home.stores.sqlite import Store

from .fleet import add_labels
from .records import manifest_of, store_records


def test_regression_prediction_drift_and_live_errors(make_bundle, tmp_path: Path) -> None:
    built = make_bundle("regression")
    model = runtime.load(built.path)
    frame = built.frame
    rows = [dict(zip(frame.columns, map(float, values))) for values in frame.to_numpy()]
    predictions = [r["prediction"] for r in model.predict(rows)]
    store = Store(tmp_path / "home.db")
    now = time.time()
    try:
        store_records(store, "field-1", model.sha256, rows, ts=now, model="yield", version=model.version,
                      outputs=[{"prediction": p} for p in predictions])
        register_manifest(store.path, model.sha256, manifest_of(built.path), verified=True)
    finally:
        store.close()
    conn = sqlite3.connect(store.path)
    ids = [row[0] for row in conn.execute("SELECT id FROM records ORDER BY rowid")]
    conn.close()
    truth = np.asarray(predictions) + np.random.default_rng(3).normal(0, 2.0, len(predictions))
    add_labels(store.path, "field-1", {rid: float(y) for rid, y in zip(ids, truth)})

    report = build_report(store.path, "yield", now=now)
    (version,) = report["versions"]
    assert version["task"] == "regression"
    (bundle,) = version["bundles"].values()
    assert bundle["baseline_source"] == "synthesized"  # make_bundle builds without reference data
    # The live predictions land on the baseline's prediction bins exactly as numpy bins them.
    edges = np.asarray(bundle["prediction"]["bins"]["edges"])
    p = np.asarray(predictions)
    inside, _ = np.histogram(p[(p >= edges[0]) & (p <= edges[-1])], bins=edges)
    assert bundle["prediction"]["kind"] == "regression"
    assert bundle["prediction"]["bins"]["live"] == [int((p < edges[0]).sum()), *inside.tolist(), int((p > edges[-1]).sum())]
    assert bundle["prediction"]["psi"] == pytest.approx(
        psi(np.concatenate([[0], bundle["prediction"]["bins"]["baseline"], [0]]), bundle["prediction"]["bins"]["live"])
    )
    live = version["live"]
    errors = np.asarray(predictions) - truth
    assert live["labeled"] == len(rows)
    assert live["overall"]["mae"] == pytest.approx(np.abs(errors).mean())
    assert live["overall"]["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))


@pytest.mark.parametrize(
    ("baseline", "ranges", "expected"),
    [
        ({"source": "reference"}, None, "reference"),  # the manifest says so: believed, even without ranges
        ({"source": "synthesized"}, [0.0, 1.0], "synthesized"),
        ({}, None, "synthesized"),  # a bundle from before the field: told by its unset ranges
        ({}, [0.0, 1.0], "reference"),
    ],
)
def test_the_baseline_source_is_the_manifests_word_else_guessed(baseline: dict, ranges: list | None, expected: str) -> None:
    from home.monitoring.report import _baseline_source

    manifest = {"baseline": baseline, "inputs": [{"name": "x", "kind": "numeric", "range": ranges}]}
    assert _baseline_source(manifest) == expected
