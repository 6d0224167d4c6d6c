"""``edgepack promote`` / ``history`` / ``--rollback`` against a real SQLite MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.tree import DecisionTreeClassifier

from edgepack.cli import cli
from tests.support.registry import register_model

NAME = "fire-risk"
COLUMNS = ["temp c", "humidity", "wind", "slope"]


@pytest.fixture
def registry(tracking_uri: str, tmp_path: Path) -> dict:
    X, y = make_classification(n_samples=900, n_features=4, n_informative=3, n_redundant=0, random_state=3)
    frame = pd.DataFrame(X, columns=COLUMNS)
    train, holdout = frame.iloc[:600], frame.iloc[600:]
    y_train, y_holdout = y[:600], y[600:]
    champion = DecisionTreeClassifier(max_depth=2, random_state=0).fit(train, y_train)
    worse = DecisionTreeClassifier(max_depth=2, random_state=0).fit(train, np.random.default_rng(1).permutation(y_train))
    better = LogisticRegression().fit(train, y_train)
    versions = {
        "champion": register_model(tracking_uri, NAME, champion, train, alias="champion", stage="Production"),
        "worse": register_model(tracking_uri, NAME, worse, train),
        "better": register_model(tracking_uri, NAME, better, train),
    }
    data = tmp_path / "holdout.parquet"
    holdout.assign(label=y_holdout).to_parquet(data)
    models = {"champion": champion, "worse": worse, "better": better}
    return {"versions": versions, "data": data, "X": holdout, "y": y_holdout, "models": models, "uri": tracking_uri}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_a_worse_challenger_is_kept_a_better_one_promoted_and_history_shows_both(registry: dict) -> None:
    v = registry["versions"]
    client = MlflowClient(registry["uri"], registry["uri"])
    code, out = run("promote", f"models:/{NAME}/{v['worse']}", "--over", "champion", "--data", str(registry["data"]),
                    "--metric", "roc_auc", "--min-gain", "0.01")
    assert code == 3, out
    assert "not promoted" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["champion"]

    code, out = run("promote", f"models:/{NAME}/{v['better']}", "--over", "champion", "--data", str(registry["data"]),
                    "--metric", "roc_auc", "--min-gain", "0.01", "--guard", "recall_drop=0.2", "--json")
    assert code == 0, out
    decision = json.loads(out)
    assert decision["outcome"] == "promoted" and decision["champion"] == v["champion"]
    # Independently scored with scikit-learn on the same rows.
    X, y, models = registry["X"], registry["y"], registry["models"]
    expected_new = roc_auc_score(y, models["better"].predict_proba(X)[:, 1])
    expected_old = roc_auc_score(y, models["champion"].predict_proba(X)[:, 1])
    assert expected_new > expected_old + 0.01
    assert decision["challenger_scores"]["roc_auc"] == pytest.approx(expected_new)
    assert decision["champion_scores"]["roc_auc"] == pytest.approx(expected_old)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["better"]
    # The registry uses stages here: the stage moved with the alias.
    assert client.get_model_version(NAME, v["better"]).current_stage == "Production"
    assert client.get_model_version(NAME, v["champion"]).current_stage == "Archived"
    run_record = client.get_run(decision["run_id"])
    assert run_record.data.metrics["challenger.roc_auc"] == pytest.approx(expected_new)
    assert run_record.data.metrics["champion.roc_auc"] == pytest.approx(expected_old)
    assert run_record.data.tags["edgepack.decision"] == "promoted"
    for version in (v["better"], v["champion"]):
        tags = client.get_model_version(NAME, version).tags
        assert tags[f"edgepack.decision.{decision['run_id']}"] == "promoted"

    code, out = run("history", NAME, "--json")
    assert code == 0, out
    entries = json.loads(out)
    assert [(e["outcome"], e["challenger"], e["champion"]) for e in entries] == [
        ("promoted", v["better"], v["champion"]), ("kept", v["worse"], v["champion"]),
    ]
    assert entries[0]["data_fingerprint"] == entries[1]["data_fingerprint"] == decision["data_fingerprint"]
    assert entries[1]["challenger_scores"]["roc_auc"] < entries[1]["champion_scores"]["roc_auc"] + 0.01
    code, text = run("history", NAME)
    assert code == 0 and text.count("@champion") == 2 and "promoted" in text and "kept" in text


def test_rollback_returns_the_alias_to_the_replaced_champion_and_is_recorded(registry: dict) -> None:
    v = registry["versions"]
    client = MlflowClient(registry["uri"], registry["uri"])
    assert run("promote", f"models:/{NAME}/{v['better']}", "--data", str(registry["data"]), "--metric", "accuracy")[0] == 0
    code, out = run("promote", "--rollback", NAME)
    assert code == 0, out
    assert f"back to version {v['champion']}" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["champion"]
    assert client.get_model_version(NAME, v["champion"]).current_stage == "Production"
    entries = json.loads(run("history", NAME, "--json")[1])
    assert [e["outcome"] for e in entries] == ["rolled_back", "promoted"]
    # Nothing left to roll back to: the champion was not put there by a recorded promotion.
    code, out = run("promote", "--rollback", NAME)
    assert code == 1 and "no recorded promotion put version" in out


def test_guards_keep_a_challenger_that_wins_on_the_metric(registry: dict) -> None:
    v = registry["versions"]
    code, out = run("promote", f"models:/{NAME}/{v['better']}", "--data", str(registry["data"]), "--metric", "roc_auc",
                    "--guard", "min_rows=100000")
    assert code == 3 and "fewer than min_rows=100000" in out
    code, out = run("promote", f"models:/{NAME}/{v['better']}", "--data", str(registry["data"]), "--metric", "roc_auc",
                    "--guard", "recall_drop=0")
    # Whether a class's recall drops decides, computed independently here.
    from sklearn.metrics import recall_score

    X, y, models = registry["X"], registry["y"], registry["models"]
    before = recall_score(y, models["champion"].predict(X), average=None)
    after = recall_score(y, models["better"].predict(X), average=None)
    assert code == (3 if (before - after > 1e-12).any() else 0), out


def test_bad_input_is_refused_with_a_clear_message(registry: dict, tmp_path: Path) -> None:
    v = registry["versions"]
    data = str(registry["data"])
    cases = [
        (["--guard", "nonsense=1"], "guard 'nonsense=1' is not known"),
        (["--metric", "mae"], "metric 'mae' does not fit a classifier"),
    ]
    for extra, message in cases:
        args = ["promote", f"models:/{NAME}/{v['better']}", "--data", data, *extra]
        if "--metric" not in extra:
            args += ["--metric", "roc_auc"]
        code, out = run(*args)
        assert code == 1 and message in out, out
    no_label = tmp_path / "no-label.csv"
    registry["X"].to_csv(no_label, index=False)
    code, out = run("promote", f"models:/{NAME}/{v['better']}", "--data", str(no_label), "--metric", "roc_auc")
    assert code == 1 and "no 'label' column" in out
    code, out = run("promote", f"models:/{NAME}@champion", "--data", data, "--metric", "roc_auc")
    assert code == 2 and "expected models:/NAME/VERSION" in out
    code, out = run("promote", f"models:/{NAME}/99", "--data", data, "--metric", "roc_auc")
    assert code == 1 and "99" in out
