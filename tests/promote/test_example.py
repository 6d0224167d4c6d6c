"""examples/retrain_round.py, the documented scheduled round, run end to end as a script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from mlflow import MlflowClient

import runtime
from edgepack.cli import cli
from tests.support.collector import RunningCollector

from .loop import NAME, labeled_field

ROOT = Path(__file__).resolve().parents[2]


def _round(tracking_uri: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "retrain_round.py"), "--model", NAME, "--tracking-uri", tracking_uri,
         "--out", str(tmp_path / "dist"), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_round_retrains_on_labeled_device_data_promotes_the_better_model_and_builds_it(
    tracking_uri: str, tmp_path: Path, collector: RunningCollector,
) -> None:
    labeled_field(tracking_uri, tmp_path, collector, challenger=False)
    done = _round(tracking_uri, tmp_path, "--collector-db", str(collector.db_path), "--metric", "roc_auc",
                  "--min-gain", "0.05", "--guard", "min_rows=50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/6 exported 300 labeled records" in done.stdout and "version 2 promoted" in done.stdout
    client = MlflowClient(tracking_uri, tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    bundle = tmp_path / "dist" / f"{NAME}.edgepkg"
    assert runtime.load(bundle).version == "2"
    entries = json.loads(CliRunner().invoke(cli, ["history", NAME, "--json", "--tracking-uri", tracking_uri]).output)
    assert [(e["outcome"], e["champion"], e["challenger"]) for e in entries] == [("promoted", "1", "2")]
    assert entries[0]["challenger_scores"]["rows"] == 90  # the newest 30% of 300

    # The next round: the retrained champion is retrained again on the same data; a
    # min-gain no copy can reach keeps it, and the exit status says so.
    again = _round(tracking_uri, tmp_path, "--collector-db", str(collector.db_path), "--min-gain", "0.5")
    assert again.returncode == 3, again.stdout + again.stderr
    assert "not promoted" in again.stdout and str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
