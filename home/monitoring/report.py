"""The drift report of one model: per version (and bundle), each feature's drift, the
prediction's drift, guardrail flag rates and live metrics, over a time window.

``build_report`` first folds new records into the counts (``aggregate.catch_up``), then
reads counts only; live metrics come from the feedback join (``live``).
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import aggregate
from . import drift
from . import live
from .bundles import connect, manifests
from .errors import UnknownModel

GUARDRAIL_PREFIXES = ("unseen_category:", "out_of_range:", "prediction_out_of_range")


def _version_key(version: str) -> tuple[int, Any]:
    return (0, int(version)) if version.isdigit() else (1, version)


def known_models(conn: sqlite3.Connection) -> list[str]:
    names = {row[0] for row in conn.execute("SELECT DISTINCT model FROM bundles")}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone():
        names |= {row[0] for row in conn.execute("SELECT DISTINCT model FROM records")}
    return sorted(names)


def _bundle_report(manifest: dict[str, Any], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    base = manifest["baseline"]
    reference_rows = base.get("rows")
    by_value: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(dict)
    totals: dict[int, int] = defaultdict(int)
    flags: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for _sha, subject, name, bucket, kind, label, n in rows:
        if subject == "total":
            totals[bucket] += n
        elif subject == "flag":
            flags[name][bucket] += n
        else:
            cell = by_value[(subject, name)]
            cell[(kind, label)] = cell.get((kind, label), 0) + n
    records = sum(totals.values())
    features = {}
    for name, entry in base["features"].items():
        live_counts = by_value.get(("feature", name), {})
        measure = drift.numeric if entry["kind"] == "numeric" else drift.categorical
        features[name] = measure(entry, live_counts, rows=reference_rows)
    prediction_base = base.get("prediction") or {}
    prediction: dict[str, Any] | None = None
    if prediction_base.get("kind") == "regression":
        prediction = drift.numeric(prediction_base, by_value.get(("prediction", ""), {}), rows=reference_rows)
    elif prediction_base.get("kind") == "classification":
        # The baseline has shares only: the same scale as the features' reference rows.
        entry = {"kind": "categorical", "frequencies": prediction_base.get("frequencies") or {}, "missing": 0}
        prediction = drift.categorical(entry, by_value.get(("prediction", ""), {}), rows=reference_rows)
    buckets = sorted(totals)
    flag_rates = {}
    for flag, per_bucket in sorted(flags.items()):
        count = sum(per_bucket.values())
        rate = count / records if records else 0.0
        flag_rates[flag] = {
            "count": count,
            "rate": rate,
            "status": drift.flag_status(rate),
            "series": [{"bucket": b, "rate": per_bucket.get(b, 0) / totals[b]} for b in buckets if totals[b]],
        }
    statuses = [f["status"] for f in features.values()] + [f["status"] for f in flag_rates.values()]
    if prediction is not None:
        statuses.append(prediction["status"])
    return {
        "records": records,
        "reference_rows": reference_rows,
        "baseline_source": _baseline_source(manifest),
        "features": features,
        "prediction": prediction,
        "flags": flag_rates,
        "records_series": [{"bucket": b, "records": totals[b]} for b in buckets],
        "status": drift.worst(*statuses) if records else "no_data",
    }


def _baseline_source(manifest: dict[str, Any]) -> str:
    """``reference`` when the bundle was built with reference data, ``synthesized`` when not.

    A build without ``--reference-data`` takes its baseline from the logged input example
    plus synthesized rows and leaves every numeric input's training ``range`` unset; drift
    against such a baseline says little about the real data. Bundles say so in
    ``baseline.source``; older bundles are told apart by their unset ranges.
    """
    source = (manifest.get("baseline") or {}).get("source")
    if source in ("reference", "synthesized"):
        return source
    numeric = [e for e in manifest.get("inputs") or [] if isinstance(e, dict) and e.get("kind") == "numeric"]
    if numeric and all(e.get("range") is None for e in numeric):
        return "synthesized"
    return "reference"


def build_report(
    db: str | Path | sqlite3.Connection,
    model: str,
    *,
    version: str | None = None,
    since_seconds: float | None = 24 * 3600,
    device: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The report of ``model`` (all its versions with a stored manifest, or ``version``)."""
    own = not isinstance(db, sqlite3.Connection)
    conn = connect(db) if own else db  # type: ignore[arg-type]
    try:
        aggregate.catch_up(conn)
        now = time.time() if now is None else now
        since = now - since_seconds if since_seconds is not None else None
        stored = manifests(conn, model=model, version=version)
        if not stored:
            known = ", ".join(known_models(conn)) or "none"
            what = f"{model!r} version {version!r}" if version is not None else f"{model!r}"
            raise UnknownModel(
                f"no bundle manifest of model {what} is stored at home (models known: {known}); upload one with "
                "POST /v1/bundles (admin token), or publish a release of it"
            )
        by_version: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for sha, manifest in stored.items():
            by_version[manifest["model"]["version"]][sha] = manifest
        rows = aggregate.counts(conn, list(stored), since=since, device=device)
        rows_by_sha: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            rows_by_sha[row[0]].append(row)
        versions = []
        for ver in sorted(by_version, key=_version_key):
            bundles = {sha: _bundle_report(m, rows_by_sha.get(sha, [])) for sha, m in by_version[ver].items()}
            any_manifest = next(iter(by_version[ver].values()))
            outputs = any_manifest.get("outputs") or {}
            metrics = live.metrics(
                conn, model=model, version=ver, task=outputs.get("task", "classification"),
                classes=outputs.get("classes"), since=since, device=device,
            )
            versions.append(
                {
                    "version": ver,
                    "task": outputs.get("task"),
                    "records": sum(b["records"] for b in bundles.values()),
                    "unmonitored_records": _unmonitored(conn, model, ver, list(bundles)),
                    "status": drift.worst(*(b["status"] for b in bundles.values())),
                    "bundles": bundles,
                    "live": metrics,
                }
            )
        return {
            "model": model,
            "since": since,
            "now": now,
            "device": device,
            "bucket_seconds": aggregate.BUCKET_SECONDS,
            "status": drift.worst(*(v["status"] for v in versions)),
            "versions": versions,
        }
    finally:
        if own:
            conn.close()


def _unmonitored(conn: sqlite3.Connection, model: str, version: str, shas: list[str]) -> int:
    """Records of this version (all time, all devices) that no stored manifest covers.

    Both counts come from indexes: records per (model, version) from the records index,
    folded records from the counts. A scan of records by bundle and window would cost
    about a second per million records, most of the report's time.
    """
    stored = conn.execute("SELECT COUNT(*) FROM records WHERE model = ? AND version = ?", (model, version)).fetchone()[0]
    folded = conn.execute(
        f"SELECT COALESCE(SUM(n), 0) FROM monitor_counts WHERE bundle_sha256 IN ({', '.join('?' * len(shas))}) AND subject = 'total'",
        shas,
    ).fetchone()[0]
    return max(int(stored) - int(folded), 0)
