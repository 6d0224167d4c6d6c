"""The whole loop: a device predicts with a bundle built from the champion, the truth
arrives, home joins it, and ``promote --from-collector`` decides on those rows; ``history``
names the bundle the champion became. A real registry, collector, buffer and onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from edgepack.cli import cli
from tests.support.collector import RunningCollector

from .loop import NAME, labeled_field


def test_promote_from_the_collector_on_labeled_device_data(tracking_uri: str, tmp_path: Path, collector: RunningCollector) -> None:
    field = labeled_field(tracking_uri, tmp_path, collector)
    X, live, y_live, champion, v1, v2, report = field.live, field.live, field.y_live, field.champion, field.v1, field.v2, field.bundle

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
    assert decision["champion_scores"]["roc_auc"] == pytest.approx(
        roc_auc_score(y_live, champion.predict_proba(live)[:, 1]), abs=1e-9)
    assert str(MlflowClient(tracking_uri, tracking_uri).get_model_version_by_alias(NAME, "champion").version) == v2

    history = CliRunner().invoke(cli, ["history", NAME], catch_exceptions=False)
    assert history.exit_code == 0
    assert f"v{v1}:" in history.output and report.sha256[:12] in history.output  # the bundle v1 became
    entries = json.loads(CliRunner().invoke(cli, ["history", NAME, "--json"]).output)
    assert entries[0]["champion_version"]["bundles"] == [report.sha256]
    assert entries[0]["challenger_version"]["bundles"] == []



def test_history_names_the_release_that_carried_a_version(tracking_uri: str, tmp_path: Path, collector: RunningCollector) -> None:
    field = labeled_field(tracking_uri, tmp_path, collector)
    releases = tmp_path / "releases"
    runner = CliRunner()
    assert runner.invoke(cli, ["release", "init", "--releases", str(releases)], catch_exceptions=False).exit_code == 0
    published = runner.invoke(cli, [
        "release", "publish", str(field.bundle.path), "--releases", str(releases), "--channel", "stable",
        "--rollout", "10%", "--tracking-uri", tracking_uri,
    ], catch_exceptions=False)
    assert published.exit_code == 0, published.output
    tag = MlflowClient(tracking_uri, tracking_uri).get_model_version(NAME, field.v1).tags["edgepack.release.stable"]
    assert tag == f"release 1: bundle {field.bundle.sha256[:16]}, rollout 10%"

    token_file = tmp_path / "admin.token"
    token_file.write_text(collector.add_admin("ops"))
    decided = runner.invoke(cli, [
        "promote", f"models:/{NAME}/{field.v2}", "--over", "champion", "--from-collector", collector.url,
        "--token-file", str(token_file), "--metric", "accuracy",
    ], catch_exceptions=False)
    assert decided.exit_code == 0, decided.output
    entries = json.loads(runner.invoke(cli, ["history", NAME, "--json"], catch_exceptions=False).output)
    assert entries[0]["champion_version"]["releases"] == {"edgepack.release.stable": tag}
    assert entries[0]["challenger_version"]["releases"] == {}
    assert "release 1: bundle" in runner.invoke(cli, ["history", NAME], catch_exceptions=False).output
