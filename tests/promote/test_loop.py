"""The whole loop: a device predicts with a bundle built from the champion, the truth
arrives, home joins it, and ``promote --from-collector`` decides on those rows; ``history``
names the bundle the champion became. A real registry, collector, buffer and onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from click.testing import CliRunner
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

import runtime
import telemetry
from edgepack.cli import cli
from packager import build_bundle
from telemetry import SyncService
from tests.support.collector import RunningCollector
from tests.support.registry import fire_risk_data, fire_risk_pipeline, register_model

NAME = "fire-risk"


def test_promote_from_the_collector_on_labeled_device_data(tracking_uri: str, tmp_path: Path, collector: RunningCollector) -> None:
    X, y = fire_risk_data(rows=600, seed=11)
    train, live, y_train, y_live = X.iloc[:300], X.iloc[300:], y[:300], y[300:]
    # The champion learnt from shuffled labels; the challenger from the real ones.
    champion = fire_risk_pipeline().fit(train, np.random.default_rng(0).permutation(y_train))
    challenger = fire_risk_pipeline().fit(train, y_train)
    v1 = register_model(tracking_uri, NAME, champion, train, alias="champion")
    v2 = register_model(tracking_uri, NAME, challenger, train)
    report = build_bundle(f"models:/{NAME}@champion", tmp_path / "fire.edgepkg", tracking_uri=tracking_uri)

    with telemetry.Buffer(tmp_path / "device.db") as buffer:
        model = runtime.load(report.path, telemetry=buffer)
        results = model.predict(live.to_dict("records"))
        for result, truth in zip(results, y_live):
            buffer.feedback(result["record_id"], int(truth))
        with SyncService(buffer, collector.url, token=collector.token) as service:
            assert service.sync_once().stopped == "drained"
            assert service.last_feedback.accepted == len(live)

    admin = collector.add_admin("ops")
    # Labeled rows are for admins only.
    refused = httpx.get(f"{collector.url}/v1/labeled", params={"model": NAME}, headers={"Authorization": f"Bearer {collector.token}"})
    assert refused.status_code == 403 and "admin token" in refused.json()["error"]
    lines = httpx.get(f"{collector.url}/v1/labeled", params={"model": NAME, "format": "jsonl", "since": "1d"},
                      headers={"Authorization": f"Bearer {admin}"}).text.splitlines()
    assert len(lines) == len(live) and json.loads(lines[0])["inputs"].keys() == set(X.columns)
    bad = httpx.get(f"{collector.url}/v1/labeled", params={"model": NAME, "since": "soon"}, headers={"Authorization": f"Bearer {admin}"})
    assert bad.status_code == 422 and "since" in bad.json()["error"]

    token_file = tmp_path / "admin.token"
    token_file.write_text(admin)
    result = CliRunner().invoke(cli, [
        "promote", f"models:/{NAME}/{v2}", "--over", "champion", "--from-collector", collector.url,
        "--token-file", str(token_file), "--since", "30d", "--metric", "roc_auc", "--min-gain", "0.05", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["outcome"] == "promoted" and decision["champion_scores"]["rows"] == len(live)
    assert decision["challenger_scores"]["roc_auc"] > 0.8
    # The rows came from home: what the champion scores there is what it scores on those inputs.
    assert decision["champion_scores"]["roc_auc"] == __import__("pytest").approx(
        roc_auc_score(y_live, champion.predict_proba(live)[:, 1]), abs=1e-9)
    assert str(MlflowClient(tracking_uri, tracking_uri).get_model_version_by_alias(NAME, "champion").version) == v2

    history = CliRunner().invoke(cli, ["history", NAME], catch_exceptions=False)
    assert history.exit_code == 0
    assert f"v{v1}:" in history.output and report.sha256[:12] in history.output  # the bundle v1 became
    entries = json.loads(CliRunner().invoke(cli, ["history", NAME, "--json"]).output)
    assert entries[0]["champion_version"]["bundles"] == [report.sha256]
    assert entries[0]["challenger_version"]["bundles"] == []
