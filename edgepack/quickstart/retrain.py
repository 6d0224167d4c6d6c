"""Train, register and promote: what a data science team does before edgepack ships a model.

Passive retraining: a candidate trained on this season's data is compared with the
production model on the same held-out rows and promoted only if it is better. The rule,
the alias and stage move and the record are ``edgepack promote``'s own library
(``packager.promotion``): ``decide`` is ``judge``, ``promote`` is ``move_alias``, and
``record_decision`` logs the decision as an MLflow run with tags on the versions (what
``edgepack history fire-risk`` lists) besides the quickstart's ``history.db`` table. A
scheduled round on labeled device data is ``examples/retrain_round.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import sqlite_utils
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from .data import TARGET

NUMERIC = ["temp_c", "humidity_pct", "wind_kmh", "rain_mm_7d", "slope_deg", "elevation_m"]
CATEGORICAL = ["region", "vegetation"]
ALIAS = "champion"
STAGE = "Production"


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome of comparing a candidate version with the production version."""

    model: str
    """Registered model name."""
    candidate_version: str
    """The version just trained and registered."""
    champion_version: str | None
    """The version in production before the decision (None for the first one)."""
    candidate_auc: float
    """ROC AUC of the candidate on the held-out rows."""
    champion_auc: float | None
    """ROC AUC of the production version on the same rows."""
    promoted: bool
    """Whether the candidate is now in production."""
    reason: str
    """One sentence a person can read in the registry."""


def train(frame: pd.DataFrame, *, seed: int) -> Pipeline:
    """A fire-risk classifier: impute the weather, one-hot the region and vegetation.

    No scaler: a forest does not need one, and a float32 scaler in front of float32 tree
    thresholds is where ONNX and scikit-learn round differently.
    """
    features = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    model = Pipeline(
        [("features", features), ("forest", RandomForestClassifier(n_estimators=60, max_depth=8, random_state=seed))]
    )
    return model.fit(frame[NUMERIC + CATEGORICAL], frame[TARGET])


def register(client: MlflowClient, name: str, model: Pipeline, frame: pd.DataFrame, *, experiment_id: str, season: str) -> str:
    """Log ``model`` in a run with its signature and an input example; return the new version."""
    X = frame[NUMERIC + CATEGORICAL]
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"fire-risk-{season}-season") as run:
        mlflow.log_param("trained_on", f"{season} season")
        mlflow.log_metric("train_rows", len(frame))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(5),
            # skops refuses these unless trusted at logging time; we trained the model ourselves.
            skops_trusted_types=["numpy.dtype", "sklearn.tree._tree.Tree"],
        )
    version = client.create_model_version(name, info.model_uri, run_id=run.info.run_id)
    return str(version.version)


def evaluate(model: Pipeline, holdout: pd.DataFrame) -> tuple[float, float]:
    """ROC AUC and accuracy on the held-out rows (``edgepack promote``'s scoring)."""
    from packager.promotion import score

    scores = score(model, holdout[NUMERIC + CATEGORICAL], holdout[TARGET], metric="roc_auc")
    return scores["roc_auc"], scores["accuracy"]


def promote(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """Point the alias and the stage at ``version``, archiving whatever held the stage before."""
    from mlflow.exceptions import MlflowException

    from packager.promotion import move_alias

    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        current = None
    # Stages are deprecated in MLflow but many teams still read them: keep both in step.
    move_alias(client, name, version, ALIAS, current, stage=STAGE)
    client.set_model_version_tag(name, version, "edgepack.promotion", reason)
    client.update_registered_model(name, description=f"In production: version {version}. {reason}")


def decide(
    *,
    model: str,
    candidate_version: str,
    candidate_auc: float,
    champion_version: str | None,
    champion_auc: float | None,
    min_gain: float,
) -> Decision:
    """Promote when there is no champion, or when the candidate beats it by ``min_gain`` AUC
    (``edgepack promote``'s rule, ``packager.promotion.judge``)."""
    from packager.promotion import judge

    outcome, reason = judge(
        "roc_auc", {"roc_auc": candidate_auc}, None if champion_auc is None else {"roc_auc": champion_auc},
        version=candidate_version, champion=champion_version, alias=ALIAS, min_gain=min_gain,
    )
    return Decision(
        model=model,
        candidate_version=candidate_version,
        champion_version=champion_version,
        candidate_auc=candidate_auc,
        champion_auc=champion_auc,
        promoted=outcome == "promoted",
        reason=reason,
    )


def record_decision(history_db: Path, decision: Decision) -> None:
    """Append the decision to the ``promotions`` table of ``history_db``, and record it in
    the registry as ``edgepack promote`` does (``edgepack history`` reads it back)."""
    from packager.promotion import record_decision as record_in_registry
    from packager.promotion.decision import Decision as RegistryDecision

    db = sqlite_utils.Database(history_db)
    db["promotions"].insert(
        {
            "decided_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": decision.model,
            "candidate_version": decision.candidate_version,
            "champion_version": decision.champion_version,
            "candidate_auc": decision.candidate_auc,
            "champion_auc": decision.champion_auc,
            "promoted": decision.promoted,
            "reason": decision.reason,
        }
    )
    db.close()
    tracking_uri = mlflow.get_tracking_uri()
    record_in_registry(
        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri),
        tracking_uri,
        RegistryDecision(
            model=decision.model, alias=ALIAS, outcome="promoted" if decision.promoted else "kept",
            champion=decision.champion_version, challenger=decision.candidate_version, reason=decision.reason,
            metric="roc_auc", challenger_scores={"roc_auc": decision.candidate_auc},
            champion_scores=None if decision.champion_auc is None else {"roc_auc": decision.champion_auc},
            stage=STAGE if decision.promoted else None, extra={"data_source": "quickstart held-out rows"},
        ),
    )
