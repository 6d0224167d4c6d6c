"""Every promotion decision about a model, read back from the registry (``edgepack history``).

One entry per run of the promotions experiment tagged with the model's name, newest first:
when, which alias, champion and challenger with their metrics, the outcome and its reason,
the data fingerprint, and for both versions the bundles built from them (the
``edgepack.bundle.*`` provenance tags ``edgepack build`` writes) and the releases that
carried them (version tags starting with ``edgepack.release``, when releases write them).
"""

from __future__ import annotations

from typing import Any

from ..registry import TAG_BUNDLE_PREFIX
from .decision import EXPERIMENT, TAG_KIND, TAG_MODEL, _client
from .errors import PromotionError

RELEASE_PREFIX = "edgepack.release"


def _scores(metrics: dict[str, float], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1 :]
            if rest.startswith("recall."):
                out.setdefault("recall", {})[rest[7:]] = value
            else:
                out[rest] = int(value) if rest == "rows" else value
    return out


def _version_info(client: Any, name: str, version: str | None, cache: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    if not version:
        return None
    if version not in cache:
        try:
            tags = client.get_model_version(name, version).tags or {}
        except MlflowException:
            tags = {}
        cache[version] = {
            "version": version,
            "bundles": sorted(v for k, v in tags.items() if k.startswith(TAG_BUNDLE_PREFIX)),
            "releases": {k: v for k, v in sorted(tags.items()) if k.startswith(RELEASE_PREFIX)},
        }
    return cache[version]


def decisions(tracking_uri: str, name: str, *, experiment: str = EXPERIMENT) -> list[dict[str, Any]]:
    """Every recorded decision about ``name``, newest first (empty if none)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        escaped = name.replace("'", "\\'")
        runs = client.search_runs(
            [found.experiment_id], filter_string=f"tags.`{TAG_MODEL}` = '{escaped}' and tags.`{TAG_KIND}` = 'promotion'",
            order_by=["attributes.start_time DESC"], max_results=10_000,
        )
    except MlflowException as exc:
        raise PromotionError(f"reading the decisions about {name!r} failed: {exc.message}") from exc
    cache: dict[str, dict[str, Any]] = {}
    out = []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        champion = tags.get("edgepack.champion") or None
        challenger = tags.get("edgepack.challenger")
        out.append({
            "run_id": run.info.run_id,
            "time": run.info.start_time / 1000.0,
            "decided_at": float(tags.get("edgepack.decided_at") or run.info.start_time / 1000.0),
            "alias": tags.get("edgepack.alias"),
            "outcome": tags.get("edgepack.decision"),
            "reason": tags.get("edgepack.reason"),
            "metric": params.get("metric") or None,
            "champion": champion,
            "challenger": challenger,
            "champion_scores": _scores(metrics, "champion"),
            "challenger_scores": _scores(metrics, "challenger"),
            "data_fingerprint": tags.get("edgepack.data_sha256") or None,
            "champion_version": _version_info(client, name, champion, cache),
            "challenger_version": _version_info(client, name, challenger, cache),
        })
    # Runs started within the same millisecond: the decision's own clock orders them.
    out.sort(key=lambda entry: entry["decided_at"], reverse=True)
    return out
