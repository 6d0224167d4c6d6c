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
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from ..stores.sqlite import write_transaction
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
        # ``source`` serves only the one-statement comparison in bench/monitoring.py; folding
        # reads values with json_each, which needs no path (any key, quotes included).
        path = _path(name)
        source = f"json_extract(inputs, {path})" if path is not None else "NULL"
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


def _coder(kind: str, entry: dict[str, Any], typed: dict[str, Any]) -> tuple[Callable[[Any], Any], list[tuple[str, str]]]:
    """A vectorised coder of one value column (object array -> int codes) and the (kind, bin) of each code."""
    import numpy as np

    if kind == "numeric":
        edges = np.asarray(entry.get("edges") or [], dtype=np.float64)
        k = max(len(edges) - 1, 0)
        labels = [("b", str(i)) for i in range(k + 2)] + [("m", ""), ("x", "")]
        missing_code, wrong_code = k + 2, k + 3

        def code_numbers(col: Any) -> Any:
            types = np.fromiter(map(type, col), dtype=object, count=len(col))
            missing = types == type(None)
            numbers = (types == float) | (types == int)
            out = np.full(len(col), wrong_code, dtype=np.int64)
            out[missing] = missing_code
            if numbers.any():
                x = col[numbers].astype(np.float64)
                # searchsorted 'right': below the first edge 0, bin i for [e(i-1), e(i)), above the
                # last edge k+1; np.histogram closes its last bin, so the last edge itself is bin k.
                codes = np.searchsorted(edges, x, side="right") if len(edges) else np.zeros(len(x), dtype=np.int64)
                if len(edges):
                    codes[x == edges[-1]] = k
                out[numbers] = codes
            return out

        return code_numbers, labels
    keys = sorted(set(entry.get("frequencies") or {}) | set(typed))
    labels = [("c", key) for key in keys] + [("m", ""), ("u", "")]
    lookup: dict[Any, int] = {}
    for i, key in enumerate(keys):
        lookup[typed.get(key, key)] = i
    lookup[None] = len(keys)
    unseen = len(keys) + 1

    def code_categories(col: Any) -> Any:
        try:
            return np.fromiter(map(lookup.get, col, repeat(unseen)), dtype=np.int64, count=len(col))
        except TypeError:  # an unhashable value (a list or object where a category belongs)
            return np.fromiter((lookup.get(v, unseen) if isinstance(v, (str, int, float, type(None))) else unseen for v in col),
                               dtype=np.int64, count=len(col))

    return code_categories, labels


def _columns(texts: Sequence[str], names: list[str]) -> Any:
    """The values of ``names`` in each JSON object of ``texts``, as an object array (records x names)."""
    import numpy as np
    import orjson

    objects = orjson.loads("[" + ",".join(texts) + "]")
    if not names:
        return np.empty((len(objects), 0), dtype=object)
    try:
        pick = itemgetter(*names)
        rows = list(map(pick, objects)) if len(names) > 1 else [(v,) for v in map(pick, objects)]
    except (KeyError, TypeError):  # a record without some feature (missing), or not an object
        rows = [tuple(o.get(n) for n in names) if isinstance(o, dict) else (None,) * len(names) for o in objects]
    table = np.empty((len(rows), len(names)), dtype=object)
    table[:] = rows
    return table


def _fold_chunk(conn: sqlite3.Connection, sha: str, manifest: dict[str, Any], lo: int, hi: int) -> int:
    """Fold records ``lo < rowid <= hi`` of bundle ``sha``; returns how many there were.

    Each record's JSON is parsed once (orjson, over the whole chunk at once), values are
    picked per feature in C (``itemgetter``), coded with numpy (``searchsorted`` on the
    baseline's edges, a dict lookup for categories) and counted with ``np.unique``: no
    Python code runs per value, only per flagged record.
    """
    import numpy as np
    import orjson

    rows = conn.execute(
        "SELECT device, ts, inputs, outputs, flags FROM main.records WHERE rowid > ? AND rowid <= ? AND bundle_sha256 = ?",
        (lo, hi, sha),
    ).fetchall()
    if not rows:
        return 0
    devices, ts, inputs, outputs, flags = zip(*rows)
    device_names, device_index = np.unique(np.asarray(devices, dtype=object), return_inverse=True)
    buckets = (np.floor(np.asarray(ts, dtype=np.float64) / BUCKET_SECONDS) * BUCKET_SECONDS).astype(np.int64)
    bucket_values, bucket_index = np.unique(buckets, return_inverse=True)
    groups, group = np.unique(device_index * len(bucket_values) + bucket_index, return_inverse=True)
    group_device = [str(device_names[g // len(bucket_values)]) for g in groups]
    group_bucket = [int(bucket_values[g % len(bucket_values)]) for g in groups]
    out: list[tuple[Any, ...]] = []

    def count(subject: str, name: str, codes: Any, labels: list[tuple[str, str]]) -> None:
        width = len(labels)
        cells, n = np.unique(group * width + codes, return_counts=True)
        for cell, k in zip(cells.tolist(), n.tolist()):
            g, c = divmod(cell, width)
            out.append((sha, subject, name, group_device[g], group_bucket[g], *labels[c], k))

    totals = np.bincount(group, minlength=len(groups))
    for g, k in enumerate(totals.tolist()):
        out.append((sha, "total", "", group_device[g], group_bucket[g], "", "", k))
    base = manifest["baseline"]
    typed_inputs = {
        e.get("name"): {str(c): c for c in e.get("categories") or []} for e in manifest.get("inputs") or [] if isinstance(e, dict)
    }
    names = list(base["features"])
    table = _columns(inputs, names)
    for j, name in enumerate(names):
        entry = base["features"][name]
        coder, labels = _coder(entry["kind"], entry, typed_inputs.get(name, {}))
        count("feature", name, coder(table[:, j]), labels)
    prediction = base.get("prediction") or {}
    if prediction.get("kind") in ("regression", "classification"):
        column = _columns(outputs, ["prediction"])[:, 0]
        if prediction["kind"] == "regression":
            coder, labels = _coder("numeric", prediction, {})
        else:
            coder, labels = _coder("categorical", prediction, _typed_labels(manifest))
        count("prediction", "", coder(column), labels)
    flagged: Counter[tuple[int, str]] = Counter()
    for g, text in zip(group.tolist(), flags):
        if text and text != "[]":
            try:
                listed = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            # A flag counted once per record, however often the record lists it.
            for flag in {f for f in listed if isinstance(f, str)} if isinstance(listed, list) else ():
                flagged[(g, flag)] += 1
    for (g, flag), k in flagged.items():
        out.append((sha, "flag", flag, group_device[g], group_bucket[g], "", "", k))
    conn.executemany(
        "INSERT INTO monitor_counts (bundle_sha256, subject, name, device, bucket, kind, bin, n) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) " + _UPSERT,
        out,
    )
    return len(rows)


def catch_up(conn: sqlite3.Connection, *, chunk_rowids: int = CHUNK_ROWIDS) -> int:
    """Fold every record not yet counted, for every bundle with a stored manifest; returns records folded."""
    create(conn)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone() is None:
        return 0
    top = conn.execute("SELECT MAX(rowid) FROM records").fetchone()[0] or 0
    folded = 0
    for sha, manifest in manifests(conn).items():
        row = conn.execute("SELECT last_rowid FROM monitor_cursor WHERE bundle_sha256 = ?", (sha,)).fetchone()
        last = row[0] if row else 0
        while last < top:
            hi = min(top, last + chunk_rowids)
            with write_transaction(conn):
                # Re-read the cursor under the write lock: another process may have folded this chunk.
                row = conn.execute("SELECT last_rowid FROM monitor_cursor WHERE bundle_sha256 = ?", (sha,)).fetchone()
                if row is not None and row[0] >= hi:
                    last = row[0]
                    continue
                lo = row[0] if row is not None else 0
                folded += _fold_chunk(conn, sha, manifest, lo, hi)
                conn.execute(
                    "INSERT INTO monitor_cursor (bundle_sha256, last_rowid) VALUES (?, ?) "
                    "ON CONFLICT(bundle_sha256) DO UPDATE SET last_rowid = excluded.last_rowid",
                    (sha, hi),
                )
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
