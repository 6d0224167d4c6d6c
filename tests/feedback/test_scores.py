"""Live scores against scikit-learn's, on random data (home has no scikit-learn; the tests do)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, roc_auc_score

from home.feedback.labels import LabelIn
from home.feedback.storage import open_feedback
from home.feedback.scores import classification_scores, live_scores, regression_scores, roc_auc

from .helpers import insert_records


def test_roc_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(bool)
    score = np.round(rng.random(500) + y * 0.3, 1)  # many ties
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score))
    assert roc_auc([True, True], [0.1, 0.2]) is None


def test_multiclass_and_regression_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    classes = ["setosa", "versicolor", "virginica"]
    proba = rng.dirichlet([1, 1, 1], 300)
    labels = [classes[i] for i in rng.integers(0, 3, 300)]
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    got = classification_scores(labels, predicted, proba.tolist(), classes)
    assert got["count"] == 300 and got["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=classes))
    truth, guess = rng.normal(size=200), rng.normal(size=200)
    reg = regression_scores(truth, guess)
    assert reg["mae"] == pytest.approx(mean_absolute_error(truth, guess))
    assert reg["rmse"] == pytest.approx(np.sqrt(mean_squared_error(truth, guess)))


def test_live_scores_per_version_and_bucket_from_the_database(home_db: str) -> None:
    db = home_db
    rng = np.random.default_rng(2)
    rows, labels = [], []
    for i in range(200):
        version = "1" if i < 120 else "2"
        value = float(rng.normal(10, 2))
        truth = value + float(rng.normal(0, 1))
        rows.append(("dev", f"r{i}", "b", 0.0, 1000.0 + i * 10, "yield", version, "a" * 64, "{}",
                     json.dumps({"prediction": value}), "[]"))
        labels.append((version, 1000.0 + i * 10, value, truth))
    insert_records(db, rows)
    with open_feedback(db) as store:
        out = store.ingest([LabelIn("dev", f"r{i}", json.dumps(t), None) for i, (_, _, _, t) in enumerate(labels) if i % 4],
                           received_at=0.0, source="import")
        assert out.accepted == 150
    scores = live_scores(db, model="yield", now=10_000.0)
    assert [(s["version"], s["task"], s["count"]) for s in scores] == [("1", "regression", 90), ("2", "regression", 60)]
    for s in scores:
        picked = [(p, t) for i, (v, _, p, t) in enumerate(labels) if i % 4 and v == s["version"]]
        assert s["mae"] == pytest.approx(mean_absolute_error([t for _, t in picked], [p for p, _ in picked]))
    buckets = live_scores(db, model="yield", version="1", bucket_seconds=600, now=10_000.0)
    assert sum(b["count"] for b in buckets) == 90 and all(b["bucket_start"] % 600 == 0 for b in buckets)
    # A label for a regressor must be a number when the record is known.
    with open_feedback(db) as store:
        refused = store.ingest([LabelIn("dev", "r0", '"high"', None)], received_at=0.0, source="api")
    assert refused.status == 422 and "expected a number" in refused.invalid[0].error
