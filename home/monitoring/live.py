"""Live model quality from ground truth: records joined with the ``feedback`` table.

The join is the shared contract: ``records.device = feedback.device AND records.id =
feedback.record_id``; ``feedback.label`` is canonical JSON of the label. Per time bucket
(of the record's ``ts``): classification gives accuracy (prediction == label, compared as
JSON values) and ROC AUC (binary: the positive class's probability; multiclass: the
macro average of one-vs-rest AUCs, from ``scipy.stats.rankdata``); regression gives MAE and
RMSE. Counting and averaging run in SQL; only the AUC needs the labeled rows' scores.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

_JOIN = "FROM records r JOIN feedback f ON f.device = r.device AND f.record_id = r.id"


def has_feedback(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone() is not None


def _where(model: str, version: str, since: float | None, device: str | None) -> tuple[str, list[Any]]:
    clauses, params = ["r.model = ?", "r.version = ?"], [model, version]
    if since is not None:
        clauses.append("r.ts >= ?")
        params.append(since)
    if device is not None:
        clauses.append("r.device = ?")
        params.append(device)
    return " WHERE " + " AND ".join(clauses), params


def auc(scores: Any, positives: Any) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positives`` (Mann-Whitney U from ranks, ties averaged)."""
    import numpy as np
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _sql_path(label: Any) -> str:
    return '$.probabilities."' + str(label).replace('"', "") + '"'


def metrics(
    conn: sqlite3.Connection,
    *,
    model: str,
    version: str,
    task: str,
    classes: list[Any] | None,
    since: float | None = None,
    device: str | None = None,
    bucket_seconds: int = 3600,
) -> dict[str, Any]:
    """Live metrics overall and per bucket: ``{"labeled": n, "overall": {...}, "series": [...]}``."""
    if not has_feedback(conn):
        return {"labeled": 0, "overall": {}, "series": [], "note": "no feedback table yet (no labels received)"}
    where, params = _where(model, version, since, device)
    bucket = f"CAST(r.ts / {int(bucket_seconds)} AS INTEGER) * {int(bucket_seconds)}"
    if task == "regression":
        sql = (
            f"SELECT {bucket} AS b, COUNT(*), AVG(ABS(json_extract(r.outputs, '$.prediction') - json_extract(f.label, '$'))), "
            "AVG((json_extract(r.outputs, '$.prediction') - json_extract(f.label, '$')) * "
            "(json_extract(r.outputs, '$.prediction') - json_extract(f.label, '$'))) "
            f"{_JOIN}{where} AND json_type(f.label) IN ('integer', 'real') GROUP BY b ORDER BY b"
        )
        series = [
            {"bucket": b, "count": n, "mae": mae, "rmse": math.sqrt(mse) if mse is not None else None}
            for b, n, mae, mse in conn.execute(sql, params)
        ]
        total = sum(p["count"] for p in series)
        overall: dict[str, Any] = {"count": total}
        if total:
            overall["mae"] = sum(p["mae"] * p["count"] for p in series) / total
            overall["rmse"] = math.sqrt(sum(p["rmse"] ** 2 * p["count"] for p in series) / total)
        return {"labeled": total, "overall": overall, "series": series}
    # Both sides rendered by SQLite's own JSON, so 1 and 1.0 or key order never decide.
    sql = (
        f"SELECT {bucket} AS b, COUNT(*), SUM(json(r.outputs -> '$.prediction') = json(f.label)) "
        f"{_JOIN}{where} GROUP BY b ORDER BY b"
    )
    series = [{"bucket": b, "count": n, "accuracy": hits / n if n else None} for b, n, hits in conn.execute(sql, params)]
    total = sum(p["count"] for p in series)
    overall = {"count": total, "accuracy": (sum(p["accuracy"] * p["count"] for p in series) / total) if total else None}
    if classes and len(classes) >= 2:
        import numpy as np

        paths = [_sql_path(c) for c in classes]
        columns = ", ".join(f"json_extract(r.outputs, '{p}')" for p in paths)
        rows = conn.execute(f"SELECT {bucket}, f.label, {columns} {_JOIN}{where}", params).fetchall()
        if rows:
            buckets = np.asarray([row[0] for row in rows])
            labels = [json.loads(row[1]) for row in rows]
            probs = np.asarray([[np.nan if v is None else v for v in row[2:]] for row in rows], dtype=np.float64)

            def score(mask: Any) -> float | None:
                if len(classes) == 2:
                    return auc(probs[mask, 1], [labels[i] == classes[1] for i in np.flatnonzero(mask)])
                per_class = [
                    auc(probs[mask, j], [labels[i] == c for i in np.flatnonzero(mask)]) for j, c in enumerate(classes)
                ]
                known = [a for a in per_class if a is not None]
                return sum(known) / len(known) if known else None

            overall["roc_auc"] = score(np.ones(len(rows), dtype=bool))
            for point in series:
                point["roc_auc"] = score(buckets == point["bucket"])
    return {"labeled": total, "overall": overall, "series": series}
