"""Records joined with their labels: the data the next training and promotion round uses.

``export_labeled(db, model=..., since_seconds=..., out=...)`` writes a Parquet file (the
``edgepack export --labeled`` mode calls it); ``GET /v1/labeled`` serves the same rows.
One row per labeled record of the model, oldest first, with these columns:

- one column per input feature, named as the feature (typed: int64 / double / string /
  bool as the values allow, null for a missing value); a feature whose name collides
  with one of the columns below is written as ``input:<name>``;
- ``label`` (the truth, in its type), ``prediction`` (what the device predicted),
  ``model``, ``version``, ``bundle_sha256``, ``ts`` (prediction time, Unix seconds, device
  clock), ``device``, ``record_id``, ``label_ts`` (when the truth was observed, may be null).

The Parquet schema's metadata holds ``edgepack.features``: a JSON object mapping each
feature name to its column, so a reader gets the model's inputs back exactly.
``since_seconds`` keeps records predicted within that many seconds of now (None: all).
``db`` is the collector's SQLite file or its PostgreSQL database (a ``postgresql://`` URI);
the rows and their order are the same on both (``home.feedback.joined``).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import HomeError
from .joined import joined_rows

META_COLUMNS = ("label", "prediction", "model", "version", "bundle_sha256", "ts", "device", "record_id", "label_ts")
"""The columns besides the features, in this order after them."""
FEATURES_KEY = b"edgepack.features"
"""Parquet schema metadata key: JSON object feature name -> column name."""

_JOIN = """
SELECT r.device, r.id, r.ts, r.model, r.version, r.bundle_sha256, r.inputs, r.outputs, f.label, f.ts
FROM feedback AS f JOIN records AS r ON r.device = f.device AND r.id = f.record_id
WHERE r.model = ? AND r.ts >= ?
ORDER BY r.ts, r.device COLLATE BINARY, r.id COLLATE BINARY
"""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class LabeledError(HomeError):
    """Labeled data cannot be read or written (a bad window, a missing database, pyarrow)."""


def parse_since(text: str | None) -> float | None:
    """``"30d"``, ``"24h"``, ``"90m"``, ``"3600s"``, ``"3600"`` -> seconds; None or ``"all"`` -> None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise LabeledError(f"window {text!r} is not a duration; expected e.g. 30d, 24h, 90m, 3600s or all")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def labeled_rows(db: str | Path, *, model: str, since_seconds: float | None, now: float | None = None) -> Iterator[dict[str, Any]]:
    """Each labeled record of ``model``: ``{"inputs": {...}, "label", "prediction", "model",
    "version", "bundle_sha256", "ts", "device", "record_id", "label_ts"}``, oldest first."""
    start = -1e308 if since_seconds is None else (time.time() if now is None else now) - since_seconds
    rows = joined_rows(db, _JOIN, (model, start), error=LabeledError, action="reading labeled records")
    for device, rid, ts, name, version, sha, inputs, outputs, label, label_ts in rows:
        out = json.loads(outputs) if outputs else {}
        yield {
            "inputs": json.loads(inputs) if inputs else {},
            "label": json.loads(label),
            "prediction": out.get("prediction") if isinstance(out, dict) else None,
            "model": name, "version": version, "bundle_sha256": sha, "ts": ts,
            "device": device, "record_id": rid, "label_ts": label_ts,
        }


def _column(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed types in one feature (a device sending text where numbers were expected):
        # keep every value, as its JSON text.
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def labeled_table(db: str | Path, *, model: str, since_seconds: float | None, now: float | None = None) -> Any:
    """The labeled rows of ``model`` as a ``pyarrow.Table`` (see the module docstring)."""
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise LabeledError("labeled data needs pyarrow: pip install 'edgepack[collector]'") from exc
    rows = list(labeled_rows(db, model=model, since_seconds=since_seconds, now=now))
    features: dict[str, str] = {}
    for row in rows:
        for name in row["inputs"]:
            if name not in features:
                features[name] = f"input:{name}" if name in META_COLUMNS or name.startswith("input:") else name
    columns: dict[str, Any] = {}
    for name, column in features.items():
        columns[column] = _column([row["inputs"].get(name) for row in rows])
    for key in META_COLUMNS:
        values = [row[key] for row in rows]
        if key in ("ts", "label_ts"):
            columns[key] = pa.array(values, pa.float64())
        elif key in ("model", "version", "bundle_sha256", "device", "record_id"):
            columns[key] = pa.array(values, pa.string())
        else:
            columns[key] = _column(values) if rows else pa.array([], pa.null())
    table = pa.table(columns)
    return table.replace_schema_metadata({FEATURES_KEY: json.dumps(features).encode(), b"edgepack.model": model.encode()})


def export_labeled(db: str, *, model: str, since_seconds: float | None, out: Path) -> int:
    """Write the labeled records of ``model`` to the Parquet file ``out``; returns rows written."""
    import pyarrow.parquet as pq

    table = labeled_table(db, model=model, since_seconds=since_seconds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    pq.write_table(table, tmp)
    tmp.replace(out)  # never a half-written file under the name asked for
    return table.num_rows


def labeled_parquet(db: str | Path, *, model: str, since_seconds: float | None) -> bytes:
    """The same rows as Parquet bytes (``GET /v1/labeled``)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(labeled_table(db, model=model, since_seconds=since_seconds), sink)
    return sink.getvalue()


def labeled_jsonl(db: str | Path, *, model: str, since_seconds: float | None) -> bytes:
    """The same rows as JSON lines (``GET /v1/labeled?format=jsonl``), inputs as an object."""
    return b"".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for row in labeled_rows(db, model=model, since_seconds=since_seconds)
    )
