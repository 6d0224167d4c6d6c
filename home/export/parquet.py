"""Records as Parquet: the columns, their logical types, and files that appear whole.

Every file has the same base columns, whatever the model:

| column | Parquet / Arrow type |
| --- | --- |
| ``device``, ``id``, ``batch_id``, ``bundle_sha256`` | string |
| ``ts`` (when the device predicted), ``received_at`` | timestamp (microseconds, UTC) |
| ``inputs``, ``outputs`` | string: the canonical JSON text the collector stored |
| ``flags`` | list of strings |

``model``, ``version`` and ``date`` (the UTC day of ``ts``) are not in the files: they are
the Hive partition directories (``model=fire-risk/version=3/date=2026-12-01/``), which
DuckDB, pyarrow, Spark and Trino turn back into columns.

When the home database knows the bundle's manifest (the ``bundles`` table), the files of
that model version also carry typed columns built from it: ``features`` (a struct, one
field per input of the manifest, float64 / int64 / string), ``prediction`` (the class
label's type, or float64 for a regression) and ``probabilities`` (map of class label to
float64). A record whose values do not fit that schema (a device on another build) gets
nulls there; its JSON text is always complete, so nothing is ever lost to typing.

A file is written under a temporary name starting with a dot (which every reader
ignores), flushed to disk and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

_FEATURE_TYPES = {"float32": "float64", "float64": "float64", "int64": "int64", "string": "string"}


def _pa() -> Any:
    import pyarrow as pa

    return pa


def partition_dir(root: Path, model: str, version: str, day: str) -> Path:
    """``root/model=M/version=V/date=D``; values URI-encoded as Hive readers expect."""
    return root / f"model={quote(model, safe='')}" / f"version={quote(version, safe='')}" / f"date={day}"


def days_of(ts: Sequence[float]) -> list[str]:
    """The UTC day (``YYYY-MM-DD``) of each unix timestamp."""
    micros = np.round(np.asarray(ts, dtype=np.float64) * 1e6).astype("int64")
    return np.datetime_as_string(micros.astype("datetime64[us]").astype("datetime64[D]")).tolist()


def _timestamps(values: Sequence[float]) -> Any:
    pa = _pa()
    micros = np.round(np.asarray(values, dtype=np.float64) * 1e6).astype("int64")
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"))


class Typing:
    """The typed columns a manifest gives one model version (or none)."""

    def __init__(self, manifest: Mapping[str, Any] | None) -> None:
        pa = _pa()
        self.features: Any = None
        self.prediction: Any = None
        self.probabilities = False
        if not manifest:
            return
        fields = []
        for entry in manifest.get("inputs") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry.get("dtype") in _FEATURE_TYPES:
                fields.append(pa.field(entry["name"], getattr(pa, _FEATURE_TYPES[entry["dtype"]])()))
        if fields and len({field.name for field in fields}) == len(fields):
            self.features = pa.struct(fields)
        outputs = manifest.get("outputs") or {}
        if outputs.get("task") == "regression":
            self.prediction = pa.float64()
        elif outputs.get("task") == "classification":
            classes = outputs.get("classes") or []
            kinds = {type(label) for label in classes}
            self.prediction = {frozenset({int}): pa.int64(), frozenset({str}): pa.string(), frozenset({bool}): pa.bool_()}.get(
                frozenset(kinds)
            )
            self.probabilities = not outputs.get("label_only", False)

    def columns(self, inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, Any]:
        """The typed columns of these records (nulls where a record does not fit)."""
        pa = _pa()
        found: dict[str, Any] = {}
        if self.features is not None:
            names = {field.name: field.type for field in self.features}
            values = []
            for text in inputs:
                row = json.loads(text)
                values.append(row if isinstance(row, dict) and _fits(row, names) else None)
            found["features"] = pa.array(values, type=self.features)
        if self.prediction is not None or self.probabilities:
            decoded = [json.loads(text) for text in outputs]
            if self.prediction is not None:
                found["prediction"] = pa.array(
                    [_scalar(row.get("prediction"), self.prediction) if isinstance(row, dict) else None for row in decoded],
                    type=self.prediction,
                )
            if self.probabilities:
                found["probabilities"] = pa.array(
                    [_probabilities(row.get("probabilities")) if isinstance(row, dict) else None for row in decoded],
                    type=pa.map_(pa.string(), pa.float64()),
                )
        return found


def _fits(row: Mapping[str, Any], types: Mapping[str, Any]) -> bool:
    pa = _pa()
    if not set(row) <= set(types):
        return False  # a field the schema does not name would be dropped silently
    for name, value in row.items():
        if value is None:
            continue
        kind = types[name]
        if kind == pa.string():
            if not isinstance(value, str):
                return False
        elif kind == pa.int64():
            if type(value) is not int or not -(2**63) <= value < 2**63:
                return False
        elif type(value) not in (int, float) or (type(value) is int and abs(value) > 2**53):
            return False
    return True


def _scalar(value: Any, kind: Any) -> Any:
    pa = _pa()
    if value is None:
        return None
    if kind == pa.float64():
        return float(value) if type(value) in (int, float) else None
    if kind == pa.int64():
        return value if type(value) is int and -(2**63) <= value < 2**63 else None
    if kind == pa.bool_():
        return value if type(value) is bool else None
    return value if isinstance(value, str) else None


def _probabilities(value: Any) -> Any:
    if not isinstance(value, dict) or not all(type(v) in (int, float) for v in value.values()):
        return None
    return [(str(key), float(probability)) for key, probability in value.items()]


def table(rows: Sequence[tuple[Any, ...]], typing: Typing) -> Any:
    """An Arrow table of records given as (device, id, batch_id, received_at, ts, model,
    version, bundle_sha256, inputs, outputs, flags) tuples of one partition."""
    pa = _pa()
    device, ids, batch_id, received_at, ts, _model, _version, sha, inputs, outputs, flags = (
        list(column) for column in zip(*rows)
    )
    columns = {
        "device": pa.array(device, type=pa.string()),
        "id": pa.array(ids, type=pa.string()),
        "batch_id": pa.array(batch_id, type=pa.string()),
        "ts": _timestamps(ts),
        "received_at": _timestamps(received_at),
        "bundle_sha256": pa.array(sha, type=pa.string()),
        "inputs": pa.array(inputs, type=pa.string()),
        "outputs": pa.array(outputs, type=pa.string()),
        "flags": pa.array([json.loads(text) if text is not None else None for text in flags], type=pa.list_(pa.string())),
        **typing.columns(inputs, outputs),
    }
    return pa.table(columns)


def write_atomically(data: Any, path: Path) -> int:
    """Write ``data`` (an Arrow table) to ``path`` as Parquet: temporary file, fsync, rename.

    Returns the file's size. A file already at ``path`` (from an interrupted run writing
    the same records) is replaced whole."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(data, temporary, compression="zstd")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path.stat().st_size
