"""Drift, flag rates and live metrics of a real fleet, through the collector's report
route and ``edgepack report``: one feature shifted on purpose alerts alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .fleet import FEATURES, Fleet

ROOT = Path(__file__).resolve().parents[2]


def report(fleet: Fleet, **params: str) -> dict:
    answer = httpx.get(
        f"{fleet.collector.url}/v1/report", params={"model": "fire-risk", **params},
        headers={"Authorization": f"Bearer {fleet.admin_token}"}, timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def bundle_of(rep: dict) -> dict:
    (version,) = rep["versions"]
    (bundle,) = version["bundles"].values()
    return bundle


def edgepack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_shifted_feature_alerts_and_no_other_feature_does(fleet: Fleet) -> None:
    hot = bundle_of(report(fleet, device="hot"))
    assert hot["records"] == 800 and hot["baseline_source"] == "reference"
    assert hot["features"]["temp c"]["status"] == "alert"
    assert hot["features"]["temp c"]["psi"] > 0.25
    assert {name: f["status"] for name, f in hot["features"].items() if name != "temp c"} == {
        name: "ok" for name in FEATURES if name != "temp c"
    }
    steady = bundle_of(report(fleet, device="steady"))
    assert {name: f["status"] for name, f in steady["features"].items()} == {name: "ok" for name in FEATURES}
    assert steady["prediction"]["status"] == "ok"
    # Training ranges come from the reference rows, so a few fresh rows fall just outside: rare, so ok.
    assert all(f["status"] == "ok" and f["rate"] < 0.01 for f in steady["flags"].values())
    assert steady["status"] == "ok"


def test_unseen_categories_raise_the_flag_rate_and_the_feature(fleet: Fleet) -> None:
    odd = bundle_of(report(fleet, device="odd"))
    flag = odd["flags"]["unseen_category:region"]
    stored = sum("unseen_category:region" in r["flags"] for r in fleet.collector.records("odd"))
    assert flag["count"] == stored and 40 < stored < 130
    assert flag["rate"] == pytest.approx(stored / 800) and flag["status"] == "alert"
    assert odd["features"]["region"]["status"] == "alert"
    assert odd["features"]["temp c"]["status"] == "ok"


def test_live_metrics_match_sklearn_on_the_same_labeled_records(fleet: Fleet) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    rep = report(fleet, device="steady")
    live = rep["versions"][0]["live"]
    records = {r["id"]: r for r in fleet.collector.records("steady")}
    labels = fleet.labels["steady"]
    predicted = [records[rid]["outputs"]["prediction"] for rid in labels]
    scores = [records[rid]["outputs"]["probabilities"]["1"] for rid in labels]
    truth = list(labels.values())
    assert live["labeled"] == len(labels) == 800
    assert live["overall"]["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert live["overall"]["roc_auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert 0.6 < live["overall"]["accuracy"] <= 1.0
    assert sum(point["count"] for point in live["series"]) == 800
    fleetwide = report(fleet)["versions"][0]["live"]
    assert fleetwide["labeled"] == 1600  # steady and hot are labeled, odd is not


def test_edgepack_report_prints_the_table_over_http_and_from_the_database(fleet: Fleet) -> None:
    text = edgepack("report", "fire-risk", "--device", "hot", "--since", "24h", "--endpoint", fleet.collector.url,
                    "--token-file", str(fleet.admin_token_file))
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0] + (" " + line.split()[1] if line.split()[0] in ("temp", "humidity") else ""): line
             for line in text.stdout.splitlines() if line.strip()}
    assert lines["temp c"].rstrip().endswith("alert")
    assert lines["humidity %"].rstrip().endswith("ok") and lines["wind.speed"].rstrip().endswith("ok")
    assert "live (800 labeled): accuracy" in text.stdout
    direct = edgepack("report", "fire-risk", "--db", str(fleet.collector.db_path), "--json", "--since", "all")
    assert direct.returncode == 0, direct.stderr
    body = json.loads(direct.stdout)
    assert body["versions"][0]["records"] == 2400 and body["status"] == "alert"


def test_edgepack_report_errors_name_the_problem(fleet: Fleet, tmp_path: Path) -> None:
    unknown = edgepack("report", "no-such-model", "--db", str(fleet.collector.db_path))
    assert unknown.returncode == 4 and "no bundle manifest of model 'no-such-model'" in unknown.stderr
    assert "fire-risk" in unknown.stderr  # the models it knows
    device_token = tmp_path / "device.token"
    device_token.write_text(fleet.collector.token)
    refused = edgepack("report", "fire-risk", "--endpoint", fleet.collector.url, "--token-file", str(device_token))
    assert refused.returncode == 3 and "admin token" in refused.stderr
    window = edgepack("report", "fire-risk", "--db", str(fleet.collector.db_path), "--since", "yesterday")
    assert window.returncode == 1 and "expected a positive number and a unit" in window.stderr
    both = edgepack("report", "fire-risk")
    assert both.returncode == 2 and "exactly one of --db" in both.stderr
