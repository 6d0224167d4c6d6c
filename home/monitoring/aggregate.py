"""Records folded into per-bin counts, once each, so a drift report reads counts, not records.

``monitor_counts`` holds, per bundle, device and hour of the record's ``ts``:

- ``subject='total'``: records;
- ``subject='feature'``, ``name`` the feature: ``kind`` ``b`` with ``bin`` the index on the
  baseline's edges (``0`` below the first edge, ``1..n`` the baseline's bins, ``n+1`` above
  the last), ``c`` with ``bin`` a known category, ``u`` an unseen category (one bucket, so a
  client sending random strings cannot grow the table), ``x`` a value of the wrong type,
  ``m`` missing (null or absent);
- ``subject='prediction'``: the same for the prediction, on the baseline's prediction bins
  (regression) or classes (classification);
- ``subject='flag'``, ``name`` the guardrail flag: records carrying it.

Why counts and not a query over ``records``: records keep inputs as JSON text, so a report
straight from them parses every record's JSON at read time (over a million records that
is far past the 5 s target, see docs/monitoring.md); counts make the report's cost depend on
bins x hours, not on records. They are filled by ``catch_up`` without touching the ingest
path: each bundle with a stored manifest has a cursor (the last ``records.rowid`` folded
in), and catching up folds the newer records in chunks, each chunk and its cursor move in
one transaction, so every record is counted exactly once even across crashes. A bundle
whose manifest arrives late is folded from its first record. All the work is SQL: one pass
per chunk extracts every feature once into a temporary table, and GROUP BY statements
count it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from .bundles import CREATE as CREATE_BUNDLES
from .bundles import manifests

BUCKET_SECONDS = 3600
"""Width of a time bucket: windows (``--since``) are resolved to whole hours."""
CHUNK_ROWIDS = 50_000
"""Rowids folded per transaction: short enough that the collector's writer never waits long."""

CREATE = (
    CREATE_BUNDLES,
    """
    CREATE TABLE IF NOT EXISTS monitor_counts (
        bundle_sha256 TEXT NOT NULL,
        subject TEXT NOT NULL,
        name TEXT NOT NULL,
        device TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        kind TEXT NOT NULL,
        bin TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (bundle_sha256, subject, name, device, bucket, kind, bin)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS monitor_cursor (
        bundle_sha256 TEXT PRIMARY KEY,
        last_rowid INTEGER NOT NULL
    )
    """,
)


def create(conn: sqlite3.Connection) -> None:
    for statement in CREATE:
        conn.execute(statement)


def _literal(value: Any) -> str:
    """A SQL literal equal to what ``json_extract`` returns for the JSON value ``value``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(value)
    text = str(value).replace("'", "''")
    return f"'{text}'"


def _path(name: str) -> str | None:
    # SQLite's JSON path quotes a key with "..." and has no escape for a quote inside it.
    if '"' in name:
        return None
    return "'$.\"" + name.replace("'", "''") + "\"'"


def _numeric_code(v: str, edges: Sequence[float]) -> str:
    if not edges:
        return f"CASE WHEN {v} IS NULL THEN 'm' WHEN typeof({v}) IN ('integer', 'real') THEN 'b0' ELSE 'x' END"
    parts = [f"WHEN {v} IS NULL THEN 'm'", f"WHEN typeof({v}) NOT IN ('integer', 'real') THEN 'x'"]
    parts += [f"WHEN {v} < {float(edge)!r} THEN 'b{i}'" for i, edge in enumerate(edges[:-1])]
    # np.histogram's last bin is closed on the right.
    parts.append(f"WHEN {v} <= {float(edges[-1])!r} THEN 'b{len(edges) - 1}'")
    return "CASE " + " ".join(parts) + f" ELSE 'b{len(edges)}' END"


def _category_code(v: str, categories: Sequence[Any], labels: dict[str, Any]) -> str:
    parts = [f"WHEN {v} IS NULL THEN 'm'"]
    for key in categories:
        text = key.replace("'", "''")
        parts.append(f"WHEN {v} = {_literal(labels.get(key, key))} THEN 'c{text}'")
    return "CASE " + " ".join(parts) + " ELSE 'u' END"


def _typed_labels(manifest: dict[str, Any]) -> dict[str, Any]:
    """Baseline prediction keys (``str(label)``) -> the label in its original type."""
    classes = (manifest.get("outputs") or {}).get("classes") or []
    return {str(c): c for c in classes}


def plan(manifest: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(subject, name, SQL source of the value, SQL template coding ``{v}``) per monitored value."""
    base = manifest["baseline"]
    # Categories in their original type (the baseline keys are their str()), so an int
    # category compares equal to what json_extract returns for it.
    typed = {
        entry.get("name"): {str(c): c for c in entry.get("categories") or []}
        for entry in manifest.get("inputs") or []
        if isinstance(entry, dict)
    }
    out: list[tuple[str, str, str, str]] = []
    for name, entry in base["features"].items():
        path = _path(name)
        if path is None:
            continue
        source = f"json_extract(inputs, {path})"
        if entry["kind"] == "numeric":
            out.append(("feature", name, source, _numeric_code("{v}", entry["edges"])))
        else:
            out.append(("feature", name, source, _category_code("{v}", sorted(set(entry["frequencies"]) | set(typed.get(name, {}))), typed.get(name, {}))))
    prediction = base.get("prediction") or {}
    source = "json_extract(outputs, '$.prediction')"
    if prediction.get("kind") == "regression":
        out.append(("prediction", "", source, _numeric_code("{v}", prediction.get("edges") or [])))
    elif prediction.get("kind") == "classification":
        labels = _typed_labels(manifest)
        keys = sorted(set(prediction.get("frequencies") or {}) | set(labels))
        out.append(("prediction", "", source, _category_code("{v}", keys, labels)))
    return out


_UPSERT = "ON CONFLICT DO UPDATE SET n = n + excluded.n"


def _fold_chunk(conn: sqlite3.Connection, sha: str, items: list[tuple[str, str, str, str]], lo: int, hi: int) -> int:
    """Fold records ``lo < rowid <= hi`` of bundle ``sha``; returns how many there were."""
    extracts = ", ".join(f"{item[2]} AS v{i}" for i, item in enumerate(items))
    conn.execute("DROP TABLE IF EXISTS temp.monitor_raw")
    conn.execute("DROP TABLE IF EXISTS temp.monitor_chunk")
    # Step 1 extracts each value once (one JSON parse per record: SQLite caches the parsed
    # text across the json_extract calls of one row); step 2 codes them. One statement for
    # both would let SQLite inline each json_extract into every WHEN of its CASE.
    conn.execute(
        f"CREATE TEMP TABLE monitor_raw AS SELECT device, CAST(ts / {BUCKET_SECONDS} AS INTEGER) * {BUCKET_SECONDS} "
        f"AS bucket, flags{', ' + extracts if extracts else ''} FROM main.records "
        "WHERE rowid > ? AND rowid <= ? AND bundle_sha256 = ?",
        (lo, hi, sha),
    )
    codes = ", ".join(f"{item[3].replace('{v}', f'v{i}')} AS c{i}" for i, item in enumerate(items))
    conn.execute(
        f"CREATE TEMP TABLE monitor_chunk AS SELECT device, bucket, flags{', ' + codes if codes else ''} FROM temp.monitor_raw"
    )
    conn.execute("DROP TABLE temp.monitor_raw")
    total = conn.execute("SELECT COUNT(*) FROM temp.monitor_chunk").fetchone()[0]
    if total:
        insert = "INSERT INTO monitor_counts (bundle_sha256, subject, name, device, bucket, kind, bin, n) "
        conn.execute(
            insert + "SELECT ?, 'total', '', device, bucket, '', '', COUNT(*) FROM temp.monitor_chunk WHERE true "
            "GROUP BY device, bucket " + _UPSERT,
            (sha,),
        )
        for i, (subject, name, _, _) in enumerate(items):
            conn.execute(
                insert + f"SELECT ?, ?, ?, device, bucket, substr(c{i}, 1, 1), substr(c{i}, 2), COUNT(*) "
                f"FROM temp.monitor_chunk WHERE true GROUP BY device, bucket, c{i} " + _UPSERT,
                (sha, subject, name),
            )
        # A flag counted once per record, however often the record lists it.
        conn.execute(
            insert + "SELECT ?, 'flag', flag, device, bucket, '', '', COUNT(*) FROM ("
            "SELECT DISTINCT c.rowid AS r, c.device AS device, c.bucket AS bucket, j.value AS flag "
            "FROM temp.monitor_chunk c, json_each(c.flags) j WHERE c.flags IS NOT NULL AND c.flags != '[]' "
            "AND j.type = 'text') WHERE true GROUP BY device, bucket, flag " + _UPSERT,
            (sha,),
        )
    conn.execute("DROP TABLE temp.monitor_chunk")
    return int(total)


def catch_up(conn: sqlite3.Connection, *, chunk_rowids: int = CHUNK_ROWIDS) -> int:
    """Fold every record not yet counted, for every bundle with a stored manifest; returns records folded."""
    create(conn)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone() is None:
        return 0
    top = conn.execute("SELECT MAX(rowid) FROM records").fetchone()[0] or 0
    folded = 0
    for sha, manifest in manifests(conn).items():
        items = plan(manifest)
        row = conn.execute("SELECT last_rowid FROM monitor_cursor WHERE bundle_sha256 = ?", (sha,)).fetchone()
        last = row[0] if row else 0
        while last < top:
            hi = min(top, last + chunk_rowids)
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read the cursor under the write lock: another process may have folded this chunk.
                row = conn.execute("SELECT last_rowid FROM monitor_cursor WHERE bundle_sha256 = ?", (sha,)).fetchone()
                if row is not None and row[0] >= hi:
                    conn.execute("COMMIT")
                    last = row[0]
                    continue
                lo = row[0] if row is not None else 0
                folded += _fold_chunk(conn, sha, items, lo, hi)
                conn.execute(
                    "INSERT INTO monitor_cursor (bundle_sha256, last_rowid) VALUES (?, ?) "
                    "ON CONFLICT(bundle_sha256) DO UPDATE SET last_rowid = excluded.last_rowid",
                    (sha, hi),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            last = hi
    return folded


def counts(
    conn: sqlite3.Connection,
    shas: Sequence[str],
    *,
    since: float | None = None,
    device: str | None = None,
) -> list[tuple[str, str, str, int, str, str, int]]:
    """(sha, subject, name, bucket, kind, bin, n) summed over devices (or for one device)."""
    if not shas:
        return []
    clauses = [f"bundle_sha256 IN ({', '.join('?' * len(shas))})"]
    params: list[Any] = list(shas)
    if since is not None:
        clauses.append("bucket >= ?")
        params.append(math.floor(since / BUCKET_SECONDS) * BUCKET_SECONDS)
    if device is not None:
        clauses.append("device = ?")
        params.append(device)
    return conn.execute(
        "SELECT bundle_sha256, subject, name, bucket, kind, bin, SUM(n) FROM monitor_counts WHERE "
        + " AND ".join(clauses)
        + " GROUP BY bundle_sha256, subject, name, bucket, kind, bin",
        params,
    ).fetchall()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
