"""Packager test fixtures: one real registry per session holding every model the registry,
CLI and flavor tests build from (logging is the slow part, so it happens once)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.registry import fire_risk_data, fire_risk_pipeline, register_model


@dataclass(frozen=True)
class Registry:
    uri: str
    """sqlite tracking/registry URI."""
    db: Path
    """The registry database file."""
    models: Mapping[str, Any]
    """Fitted models by ``name/version``."""
    X: Any
    """The fire-risk training frame."""


def onnx_answers(onnx_bytes: bytes, inputs: Sequence[Mapping[str, Any]], onnx_inputs: Sequence[Mapping[str, Any]], frame: Any) -> list[Any]:
    """Run a bundle's model the way docs/bundle-format.md tells a device to: each feature at
    its ``slot`` of its ``onnx_input``, strings as object arrays, missing numbers as NaN."""
    import onnxruntime as ort

    arrays = {}
    for spec in onnx_inputs:
        dtype = object if spec["dtype"] == "string" else np.dtype(spec["dtype"])
        arrays[spec["name"]] = np.empty((len(frame), spec["width"]), dtype=dtype)
    for feature in inputs:
        column = frame[feature["name"]]
        encoding = feature.get("encoding")
        if encoding is not None:
            # One-hot: slot + k is 1.0 where the string is categories[k], 0.0 elsewhere.
            assert encoding["kind"] == "one_hot"
            start, cats = feature["slot"], encoding["categories"]
            for k, cat in enumerate(cats):
                arrays[feature["onnx_input"]][:, start + k] = [1.0 if str(v) == cat else 0.0 for v in column.tolist()]
            continue
        if feature["dtype"] == "string":
            values = np.asarray([str(v) for v in column.tolist()], dtype=object)
        else:
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        arrays[feature["onnx_input"]][:, feature["slot"]] = values
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, arrays)


def _tree_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from sklearn.tree import DecisionTreeClassifier

    pre = ColumnTransformer(
        [
            ("num", SimpleImputer(), ["temp c", "humidity %", "wind.speed"]),
            ("cat", OrdinalEncoder(), ["region"]),
        ]
    )
    return Pipeline([("pre", pre), ("tree", DecisionTreeClassifier(max_depth=4, random_state=0))])


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, _empty_registry_db: Path) -> Registry:
    """``fire`` v1 (LogisticRegression pipeline, alias ``champion``), v2 (decision tree,
    stage Production), v3 (v1's model saved as pickle)."""
    root = tmp_path_factory.mktemp("packager-registry")
    db = root / "mlflow.db"
    shutil.copyfile(_empty_registry_db, db)
    uri = f"sqlite:///{db}"
    X, y = fire_risk_data()
    lr = fire_risk_pipeline().fit(X, y)
    tree = _tree_pipeline().fit(X, y)
    register_model(uri, "fire", lr, X, alias="champion")
    register_model(uri, "fire", tree, X, stage="Production")
    register_model(uri, "fire", lr, X, serialization="pickle")
    return Registry(uri=uri, db=db, models={"fire/1": lr, "fire/2": tree, "fire/3": lr}, X=X)
