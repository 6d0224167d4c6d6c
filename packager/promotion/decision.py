"""Promote a challenger over the champion only if it measures better on the same rows.

``promote`` scores the challenger (``models:/NAME/VERSION``) and the version the alias
points at (the champion) on the same labeled rows, and moves the alias to the challenger
only if it wins on the metric by at least ``min_gain`` (a tie keeps the champion) and
passes every guard. Where the registry uses stages (the champion holds one), the
challenger takes that stage too and the champion is archived. Every decision is recorded
whatever it is: as an MLflow run in the ``edgepack-promotions`` experiment (both models'
metrics, the data's fingerprint, the decision and its reason) and as tags on both
versions (``edgepack.decision.<run id>`` = the outcome and reason, ``edgepack.last_decision``).
``rollback`` moves the alias back to the champion the last promotion replaced, and records
that the same way. ``edgepack history`` reads the runs back (``history.py``).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import PackagerError
from ..options import DEFAULT_TRUSTED_TYPES
from .data import Rows
from .errors import PromotionError
from .guards import Guard, check
from .scoring import METRICS, gain, score

EXPERIMENT = "edgepack-promotions"
"""The MLflow experiment that holds one run per decision."""
TAG_KIND = "edgepack.kind"
TAG_MODEL = "edgepack.model"
TAG_DECISION = "edgepack.decision"
TAG_REASON = "edgepack.reason"
TAG_LAST = "edgepack.last_decision"


@dataclass(frozen=True, kw_only=True)
class PromoteOptions:
    """How ``promote`` decides."""

    alias: str = "champion"
    """The registered-model alias that names production."""
    metric: str = "roc_auc"
    """What decides: ``roc_auc``, ``accuracy``, ``f1`` (higher wins), ``mae``, ``rmse`` (lower wins)."""
    min_gain: float = 0.0
    """How much better the challenger must be (in the metric's units); a tie always keeps the champion."""
    guards: tuple[Guard, ...] = ()
    """Further conditions (``guards.parse_guard``)."""
    trust_pickle: bool = False
    """Load pickled models (only for registries you trust)."""
    trusted_types: tuple[str, ...] = DEFAULT_TRUSTED_TYPES
    """Types a skops model may hold beyond what skops trusts."""
    experiment: str = EXPERIMENT
    """The MLflow experiment decisions are logged in."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What ``promote`` or ``rollback`` decided."""

    model: str
    """Registered model name."""
    alias: str
    """The alias decided about."""
    outcome: str
    """``promoted``, ``kept`` or ``rolled_back``."""
    champion: str | None
    """The version the alias held before (None: there was none)."""
    challenger: str
    """The version decided about (for a rollback: the version the alias returns to)."""
    reason: str
    """One sentence a person can read."""
    metric: str | None = None
    """The deciding metric."""
    champion_scores: dict[str, Any] | None = None
    """Every score of the champion on the rows."""
    challenger_scores: dict[str, Any] | None = None
    """Every score of the challenger on the rows."""
    data_fingerprint: str | None = None
    """SHA-256 of the rows both were scored on."""
    run_id: str | None = None
    """The MLflow run that records the decision."""
    stage: str | None = None
    """The stage moved along with the alias, if the registry uses stages."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.outcome in ("promoted", "rolled_back")


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _load(tracking_uri: str, name: str, version: str, options: PromoteOptions) -> Any:
    resolved = registry.resolve(f"models:/{name}/{version}", tracking_uri)
    with tempfile.TemporaryDirectory(prefix="edgepack-promote-") as tmp:
        loaded = registry.load(registry.download(resolved, tmp), trust_pickle=options.trust_pickle,
                               trusted_types=options.trusted_types)
    if loaded.flavor == "onnx" or not hasattr(loaded.model, "predict"):
        raise PromotionError(
            f"models:/{name}/{version} is a {loaded.flavor} model without a scikit-learn predict(); promote scores "
            "scikit-learn-API models (sklearn, xgboost/lightgbm sklearn wrappers)"
        )
    return loaded


def input_columns(loaded: Any) -> list[str]:
    """The input columns a loaded model takes, from its signature or input example."""
    if loaded.signature_columns:
        return [name for name, _ in loaded.signature_columns]
    if loaded.input_example is not None:
        return [str(c) for c in loaded.input_example.columns]
    names = getattr(loaded.model, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    raise PromotionError("the model has no input signature, input example or feature names: cannot tell its inputs")


def promote(
    tracking_uri: str, name: str, version: str, *, rows: Callable[[list[str]], Rows], options: PromoteOptions,
) -> Decision:
    """Score ``models:/name/version`` against the alias' version on ``rows(columns)``, move
    the alias if the challenger wins, record the decision; returns it."""
    if options.metric not in METRICS:
        raise PromotionError(f"metric {options.metric!r} is not known; expected one of {', '.join(METRICS)}")
    client = _client(tracking_uri)
    registry.resolve(f"models:/{name}/{version}", tracking_uri)  # a clear error for a wrong name or version
    current = _alias_version(client, name, options.alias)
    champion = None if current is None else str(current.version)
    if champion == str(version):
        raise PromotionError(f"models:/{name}/{version} already holds @{options.alias}; nothing to decide")
    challenger_model = _load(tracking_uri, name, version, options)
    columns = input_columns(challenger_model)
    champion_model = None if champion is None else _load(tracking_uri, name, champion, options)
    if champion_model is not None:
        columns += [c for c in input_columns(champion_model) if c not in columns]
    data = rows(columns)
    challenger_scores = score(challenger_model.model, data.X[input_columns(challenger_model)], data.y, metric=options.metric)
    champion_scores = (
        None if champion_model is None
        else score(champion_model.model, data.X[input_columns(champion_model)], data.y, metric=options.metric)
    )
    outcome, reason = judge(
        options.metric, challenger_scores, champion_scores, version=str(version), champion=champion,
        alias=options.alias, min_gain=options.min_gain, guards=options.guards,
    )
    metric = options.metric
    stage = None
    if outcome == "promoted":
        stage = move_alias(client, name, str(version), options.alias, current)
    decision = Decision(
        model=name, alias=options.alias, outcome=outcome, champion=champion, challenger=str(version), reason=reason,
        metric=metric, champion_scores=champion_scores, challenger_scores=challenger_scores,
        data_fingerprint=data.fingerprint, stage=stage, extra={"data_source": data.source,
                                                             "guards": [str(g) for g in options.guards],
                                                             "min_gain": options.min_gain},
    )
    return record_decision(client, tracking_uri, decision, options.experiment)


def judge(
    metric: str, challenger_scores: dict[str, Any], champion_scores: dict[str, Any] | None, *, version: str,
    champion: str | None, alias: str, min_gain: float, guards: tuple[Guard, ...] = (),
) -> tuple[str, str]:
    """``("promoted" | "kept", reason)``: the rule, on scores already computed.

    Kept when a guard fails, or when the challenger does not beat the champion on
    ``metric`` by more than 0 and at least ``min_gain``; promoted when nothing holds the alias.
    """
    failed = check(guards, challenger_scores, champion_scores)
    new = challenger_scores[metric]
    rows = challenger_scores.get("rows")
    on = f"the same {rows} rows" if rows else "the same rows"
    if failed:
        return "kept", f"version {version} not promoted: " + "; ".join(failed)
    if champion_scores is None or champion is None:
        return "promoted", f"version {version} promoted: no version held @{alias} ({metric} {new:.4f} on {rows or 'the'} rows)"
    old = champion_scores[metric]
    won = gain(metric, new, old)
    if won > 0 and won >= min_gain - 1e-12:
        return "promoted", (f"version {version} promoted: {metric} {new:.4f} beats version {champion}'s {old:.4f} "
                            f"by {won:.4f} (at least {min_gain:g} needed) on {on}")
    short = "not above 0" if won <= 0 else f"less than the {min_gain:g} needed"
    return "kept", (f"version {version} not promoted: {metric} {new:.4f} against version {champion}'s {old:.4f} "
                    f"is a gain of {won:.4f}, {short} (on {on})")


def rollback(tracking_uri: str, name: str, *, alias: str = "champion", experiment: str = EXPERIMENT) -> Decision:
    """Move ``alias`` back to the champion the last promotion to its current version replaced."""
    from .history import decisions

    client = _client(tracking_uri)
    current = _alias_version(client, name, alias)
    if current is None:
        raise PromotionError(f"no version of {name!r} holds @{alias}; nothing to roll back")
    holder = str(current.version)
    previous = None
    for entry in decisions(tracking_uri, name, experiment=experiment):  # newest first
        if entry["alias"] != alias:
            continue
        # Only promotions: rolling back twice walks further back (v3 -> v2 -> v1), it never
        # undoes the rollback itself.
        if entry["outcome"] == "promoted" and entry["challenger"] == holder:
            previous = entry["champion"]
            break
    if previous is None:
        raise PromotionError(
            f"no recorded promotion put version {holder} @{alias}; edgepack history {name} shows what was decided "
            "(set the alias by hand if it was moved outside edgepack)"
        )
    stage = move_alias(client, name, previous, alias, current)
    decision = Decision(
        model=name, alias=alias, outcome="rolled_back", champion=holder, challenger=previous, stage=stage,
        reason=f"rolled back: @{alias} moved from version {holder} back to version {previous}, the champion it replaced",
    )
    return record_decision(client, tracking_uri, decision, experiment)


def move_alias(client: Any, name: str, version: str, alias: str, current: Any | None, *, stage: str | None = None) -> str | None:
    """Point ``alias`` at ``version``; where the old holder (``current``) had a stage, move
    the stage too, archiving the others (``stage`` names one to give when it had none).
    Returns the stage given, if any."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, alias, version)
        held = getattr(current, "current_stage", None) if current is not None else None
        stage = held if held and held != "None" else stage
        if stage and stage != "None":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # stages are deprecated in MLflow; some teams still read them
                client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
            return stage
    except MlflowException as exc:
        raise PromotionError(f"moving @{alias} of {name!r} to version {version} failed: {exc.message}") from exc
    return None


def _flat(prefix: str, scores: dict[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (scores or {}).items():
        if isinstance(value, dict):
            for label, v in value.items():
                out[f"{prefix}.{key}.{label}"] = float(v)
        elif isinstance(value, (int, float)):
            out[f"{prefix}.{key}"] = float(value)
    return out


def _artifacts_for(tracking_uri: str) -> str | None:
    # MLflow's default artifact root for a SQLite registry is ./mlruns under whatever the
    # working directory is; keep the decisions' artifacts next to the registry instead.
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
        if str(db) not in ("", ":memory:"):
            return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def record_decision(client: Any, tracking_uri: str, decision: Decision, experiment: str = EXPERIMENT) -> Decision:
    """Log ``decision`` as a run and as tags on both versions; returns it with its run id."""
    import re

    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None
                         else client.create_experiment(experiment, artifact_location=_artifacts_for(tracking_uri)))
        document = {
            "model": decision.model, "alias": decision.alias, "outcome": decision.outcome,
            "champion": decision.champion, "challenger": decision.challenger, "metric": decision.metric,
            "champion_scores": decision.champion_scores, "challenger_scores": decision.challenger_scores,
            "data_fingerprint": decision.data_fingerprint, "reason": decision.reason, "stage": decision.stage,
            "decided_at": time.time(), **decision.extra,
        }
        tags = {
            TAG_KIND: "promotion", TAG_MODEL: decision.model, TAG_DECISION: decision.outcome,
            TAG_REASON: decision.reason[:5000], "edgepack.alias": decision.alias,
            "edgepack.champion": decision.champion or "", "edgepack.challenger": decision.challenger,
            "edgepack.data_sha256": decision.data_fingerprint or "", "edgepack.decided_at": repr(time.time()),
            "mlflow.runName":
                f"{decision.outcome} {decision.model} v{decision.challenger}",
        }
        run = client.create_run(experiment_id, tags=tags)
        run_id = run.info.run_id
        params = {"model": decision.model, "alias": decision.alias, "champion_version": decision.champion or "none",
                  "challenger_version": decision.challenger, "metric": decision.metric or "",
                  "min_gain": str(decision.extra.get("min_gain", "")), "guards": ",".join(decision.extra.get("guards", [])),
                  "data_source": str(decision.extra.get("data_source", ""))[:500]}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        metrics = {**_flat("champion", decision.champion_scores), **_flat("challenger", decision.challenger_scores)}
        for key, value in metrics.items():
            client.log_metric(run_id, re.sub(r"[^\w./ -]", "_", key), value)
        client.log_text(run_id, json.dumps(document, indent=2, sort_keys=True, default=str), "decision.json")
        client.set_terminated(run_id)
        summary = json.dumps({"run_id": run_id, "outcome": decision.outcome, "reason": decision.reason})[:5000]
        for version in {decision.challenger, *( [decision.champion] if decision.champion else [])}:
            client.set_model_version_tag(decision.model, version, f"edgepack.decision.{run_id}", decision.outcome)
            client.set_model_version_tag(decision.model, version, TAG_LAST, summary)
    except MlflowException as exc:
        raise PromotionError(f"recording the decision about {decision.model!r} in {registry.redact(tracking_uri)} failed: "
                             f"{exc.message} (the alias {'was' if decision.promoted else 'was not'} moved)") from exc
    except PackagerError:
        raise
    return Decision(**{**decision.__dict__, "run_id": run_id})
