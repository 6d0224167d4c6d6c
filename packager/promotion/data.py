"""The labeled rows both models are scored on: a file, or home's labeled records.

A file is Parquet (``.parquet``, e.g. from ``edgepack export --labeled``) or CSV, with one
column per model input (by its original name) and the truth in ``label`` (another name with
``label_column``). ``from_collector`` fetches the same rows from ``GET /v1/labeled`` with
an admin token. A Parquet file written by home carries ``edgepack.features`` in its
metadata (feature name -> column), which is used to find the inputs.

The fingerprint is the SHA-256 of the rows as scored (the feature columns in the models'
order, then the labels, hashed by pandas row by row), so two decisions on the same data
show the same fingerprint whatever file they came from.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError


@dataclass(frozen=True, kw_only=True)
class Rows:
    """Labeled rows ready to score."""

    X: Any
    """The model inputs (a pandas DataFrame, columns in the order the models take them)."""
    y: Any
    """The truth (a numpy array)."""
    source: str
    """Where the rows came from (a path or a URL), for the record."""
    fingerprint: str
    """SHA-256 of the rows as scored."""


def _features_map(table: Any) -> dict[str, str]:
    meta = table.schema.metadata or {}
    raw = meta.get(b"edgepack.features")
    return json.loads(raw) if raw else {}


def read_table(path: Path) -> tuple[Any, dict[str, str]]:
    """A DataFrame of the file and its feature -> column map (empty for plain files)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"no data file at {path}; expected a Parquet or CSV file of labeled rows")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return table.to_pandas(), _features_map(table)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path), {}
    except Exception as exc:  # pyarrow and pandas raise many kinds
        raise DataError(f"cannot read {path}: {exc}") from exc
    raise DataError(f"{path}: expected a .parquet or .csv file")


def fetch_labeled(url: str, *, model: str, token: str, since: str | None) -> tuple[Any, dict[str, str]]:
    """Home's labeled records of ``model`` (``GET /v1/labeled``) as a DataFrame and feature map."""
    import httpx
    import pyarrow.parquet as pq

    params = {"model": model, "format": "parquet", **({"since": since} if since else {})}
    endpoint = url.rstrip("/") + "/v1/labeled"
    try:
        answer = httpx.get(endpoint, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=300)
    except httpx.HTTPError as exc:
        raise DataError(f"cannot reach {endpoint}: {exc}") from exc
    if answer.status_code != 200:
        try:
            problem = answer.json().get("error", "")
        except ValueError:
            problem = answer.text[:200]
        raise DataError(f"{endpoint} answered {answer.status_code}: {problem}")
    table = pq.read_table(io.BytesIO(answer.content))
    return table.to_pandas(), _features_map(table)


def prepare(frame: Any, features: dict[str, str], columns: list[str], *, label_column: str, source: str) -> Rows:
    """The model inputs ``columns`` and the labels of ``frame``, checked, fingerprinted."""
    import pandas as pd

    if label_column not in frame.columns:
        raise DataError(f"{source} has no {label_column!r} column (the truth); its columns: {', '.join(map(str, frame.columns))}")
    frame = frame[frame[label_column].notna()]
    if not len(frame):
        raise DataError(f"{source} has no labeled rows to score on")
    picked = {}
    missing = []
    for name in columns:
        column = features.get(name, name)
        if column in frame.columns:
            picked[name] = frame[column]
        else:
            missing.append(name)
    if missing:
        raise DataError(f"{source} lacks the model input(s) {', '.join(missing)}; expected one column per input")
    X = pd.DataFrame(picked).reset_index(drop=True)
    y = frame[label_column].reset_index(drop=True)
    digest = hashlib.sha256()
    digest.update(json.dumps(list(map(str, X.columns))).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y.astype(str), index=False).to_numpy().tobytes())
    return Rows(X=X, y=y.to_numpy(), source=source, fingerprint=digest.hexdigest())
