"""Small real bundles for runtime tests, built the way docs/bundle-format.md describes.

Trains a scikit-learn pipeline, converts it with skl2onnx (one ONNX input per column),
then puts a ``Split`` node in front so that same-typed columns travel packed in one
``(N, width)`` tensor per dtype, and writes the bundle with ``runtime.bundle.write_bundle``.
Also crafts corrupt and malicious archives by hand.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from runtime.bundle import Bundle, write_bundle

REGIONS = ["north", "south", "east", "west"]
VEGETATION = ["grass", "shrub", "conifer"]
TOLERANCE = {"abs": 1e-4, "rel": 1e-4}
OPSETS = {"": 17, "ai.onnx.ml": 3}


def fire_frame(rows: int, *, seed: int, numeric: int = 3, nan_every: int = 17) -> tuple[pd.DataFrame, np.ndarray]:
    """``numeric`` weather-like columns (the second has NaNs) plus ``region`` and ``vegetation``."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    names = ["temp c", "humidity_pct", "wind_kmh"] + [f"x{i}" for i in range(3, numeric)]
    for i, name in enumerate(names[:numeric]):
        data[name] = rng.normal(20 + i, 5 + i, rows).round(2)
    data["humidity_pct"][::nan_every] = np.nan
    data["region"] = rng.choice(REGIONS, rows).astype(object)
    data["vegetation"] = rng.choice(VEGETATION, rows).astype(object)
    frame = pd.DataFrame(data)
    logit = 0.2 * (frame["temp c"] - 20) + np.where(frame["region"] == "south", 1.0, -0.5)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame, label


def pipeline_for(frame: pd.DataFrame, estimator: Any) -> Pipeline:
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    features = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return Pipeline([("features", features), ("model", estimator)])


def _packed_model(model: Pipeline, frame: pd.DataFrame) -> tuple[bytes, list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Convert with one input per column, then prepend a Split per dtype."""
    columns = list(frame.columns)
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
    strings = [c for c in columns if c not in numeric]
    initial = [(c, FloatTensorType([None, 1]) if c in numeric else StringTensorType([None, 1])) for c in columns]
    options = {id(model.steps[-1][1]): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    proto = convert_sklearn(model, initial_types=initial, target_opset=OPSETS, options=options)

    graph = proto.graph
    # skl2onnx may rename inputs ("temp c" -> "temp_c"): graph inputs come in column order.
    per_column = {c: i.name for c, i in zip(columns, graph.input)}
    new_inputs, nodes, inputs_manifest, onnx_inputs = [], [], [], []
    for packed_name, members, elem, dtype in (
        ("float_input", numeric, TensorProto.FLOAT, "float32"),
        ("string_input", strings, TensorProto.STRING, "string"),
    ):
        if not members:
            continue
        new_inputs.append(helper.make_tensor_value_info(packed_name, elem, [None, len(members)]))
        outs = [per_column[c] for c in members]
        if len(members) == 1:
            nodes.append(helper.make_node("Identity", [packed_name], outs, name=f"unpack_{packed_name}"))
        else:
            opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
            if opset < 13:  # Split takes its sizes as an attribute before opset 13
                nodes.append(helper.make_node("Split", [packed_name], outs, axis=1, split=[1] * len(members),
                                              name=f"unpack_{packed_name}"))
            else:
                split_name = f"{packed_name}_split"
                graph.initializer.append(numpy_helper.from_array(np.ones(len(members), dtype=np.int64), split_name))
                nodes.append(helper.make_node("Split", [packed_name, split_name], outs, axis=1, name=f"unpack_{packed_name}"))
        onnx_inputs.append({"name": packed_name, "dtype": dtype, "width": len(members)})
        for slot, c in enumerate(members):
            inputs_manifest.append((columns.index(c), packed_name, slot, c, dtype))
    del graph.input[:]
    graph.input.extend(new_inputs)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    onnx.checker.check_model(proto)
    features = []
    for _, packed_name, slot, c, dtype in sorted(inputs_manifest):
        col = frame[c]
        if dtype == "string":
            features.append(
                {"name": c, "onnx_input": packed_name, "slot": slot, "dtype": "string", "kind": "categorical",
                 "nullable": bool(col.isna().any()), "range": None, "categories": sorted(col.dropna().unique().tolist())}
            )
        else:
            features.append(
                {"name": c, "onnx_input": packed_name, "slot": slot, "dtype": "float32", "kind": "numeric",
                 "nullable": bool(col.isna().any()), "range": [float(col.min()), float(col.max())], "categories": None}
            )
    output_names = [o.name for o in graph.output]
    return proto.SerializeToString(), features, onnx_inputs, output_names


def _plain(values: Sequence[Any]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, float) and v != v:
            out.append(None)
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(v)
    return out


@dataclass(frozen=True)
class Built:
    bundle: Bundle
    path: Path
    model: Pipeline
    frame: pd.DataFrame
    target: np.ndarray

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest


def build_bundle(
    path: Path,
    model: Pipeline,
    frame: pd.DataFrame,
    target: np.ndarray,
    *,
    name: str = "fire-risk",
    version: str = "1",
    golden_rows: int = 20,
    signing_key: Path | None = None,
    manifest_overrides: Mapping[str, Any] | None = None,
    golden_override: dict[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Built:
    """Fit ``model`` on ``frame``/``target`` and write a real bundle for it at ``path``."""
    model.fit(frame, target)
    onnx_bytes, features, onnx_inputs, output_names = _packed_model(model, frame)
    golden_frame = frame.iloc[:golden_rows]
    golden_inputs = {c: _plain(golden_frame[c].tolist()) for c in frame.columns}
    classification = hasattr(model, "predict_proba")
    if classification:
        classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
        outputs = {
            "task": "classification", "classes": classes, "label": output_names[0], "label_values": classes,
            "probabilities": output_names[1], "prediction": None, "target_range": None,
        }
        golden_outputs = {
            "label": _plain(model.predict(golden_frame).tolist()),
            "probabilities": model.predict_proba(golden_frame).tolist(),
            "prediction": None,
        }
    else:
        outputs = {
            "task": "regression", "classes": None, "label": None, "label_values": None, "probabilities": None,
            "prediction": output_names[0], "target_range": [float(np.min(target)), float(np.max(target))],
        }
        golden_outputs = {"label": None, "probabilities": None, "prediction": model.predict(golden_frame).tolist()}
    golden = golden_override if golden_override is not None else {
        "inputs": golden_inputs, "outputs": golden_outputs, "tolerance": TOLERANCE
    }
    manifest: dict[str, Any] = {
        "edgepack_version": "0.1.0",
        "model": {
            "name": name, "version": version, "run_id": "0" * 32, "requested_uri": f"models:/{name}@champion",
            "resolved": {"kind": "alias", "value": "champion"}, "registry_uri": "sqlite:///mlflow.db",
            "flavor": "sklearn", "created_at": 1764400000000, "estimator": type(model).__name__,
        },
        "inputs": features,
        "onnx_inputs": onnx_inputs,
        "outputs": outputs,
        "onnx": {"opsets": OPSETS, "ir_version": 8, "precision": "float32",
                 "producers": {"skl2onnx": "test", "onnx": onnx.__version__, "sklearn": "test"}},
        "parity": {"rows": len(frame), "rows_with_missing": int(frame.isna().any(axis=1).sum()), "label_agreement": 1.0,
                   "max_abs_diff": 0.0, "max_rel_diff": 0.0, "tolerance": TOLERANCE, "precision": "float32",
                   "attempts": ["float32"], "onnxruntime": "test"},
        "baseline": {"rows": len(frame), "features": {}, "prediction": {}},
    }
    for key, value in (manifest_overrides or {}).items():
        manifest[key] = value
    files = {
        "model.onnx": onnx_bytes,
        "golden.json": json.dumps(golden).encode(),
        "requirements.txt": b"onnxruntime==1.32.0\nnumpy>=1.24,<3\n",
        **(extra_files or {}),
    }
    bundle = write_bundle(path, manifest, files, signing_key=signing_key)
    return Built(bundle=bundle, path=Path(path), model=model, frame=frame, target=target)


def fire_classifier(path: Path, *, seed: int = 0, rows: int = 300, numeric: int = 3, trees: int = 15, **kwargs: Any) -> Built:
    frame, label = fire_frame(rows, seed=seed, numeric=numeric)
    model = pipeline_for(frame, RandomForestClassifier(n_estimators=trees, max_depth=6, random_state=seed))
    return build_bundle(path, model, frame, label, **kwargs)


def label_classifier(path: Path, *, seed: int = 1, **kwargs: Any) -> Built:
    """Three string classes."""
    frame, _ = fire_frame(300, seed=seed)
    temp = frame["temp c"].to_numpy()
    target = np.where(temp > 24, "high", np.where(temp > 17, "medium", "low")).astype(object)
    model = pipeline_for(frame, RandomForestClassifier(n_estimators=10, max_depth=5, random_state=seed))
    return build_bundle(path, model, frame, target, name="risk-level", **kwargs)


def regressor(path: Path, *, seed: int = 2, **kwargs: Any) -> Built:
    frame, _ = fire_frame(300, seed=seed)
    target = (frame["temp c"] * 3 + np.where(frame["region"] == "south", 10, 0)).to_numpy()
    model = pipeline_for(frame, RandomForestRegressor(n_estimators=10, max_depth=6, random_state=seed))
    return build_bundle(path, model, frame, target, name="burn-area", **kwargs)


# -- hand-made archives -------------------------------------------------------------------


def rezip(source: bytes, *, rename: Mapping[str, str] | None = None, drop: Sequence[str] = (),
          add: Sequence[tuple[str, bytes]] = (), replace: Mapping[str, bytes] | None = None) -> bytes:
    """Rewrite a bundle's archive entry by entry (names, contents), without touching the manifest."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = (replace or {}).get(info.filename, src.read(info))
            dst.writestr((rename or {}).get(info.filename, info.filename), data)
        for name, data in add:
            dst.writestr(name, data)
    return out.getvalue()


def with_manifest(source: bytes, manifest: dict[str, Any]) -> bytes:
    """Replace manifest.json (canonical JSON) and drop any signature."""
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return rezip(source, drop=["manifest.sig"], replace={"manifest.json": data})


def raw_zip(entries: Sequence[tuple[str, bytes, int | None]]) -> bytes:
    """A zip written byte by byte: ``(name, data, declared_size)``; duplicate names allowed.

    ``declared_size`` (when not None) is what the central directory claims as the
    uncompressed size, so an entry can pretend to be 1 GB while holding a few bytes.
    """
    local = io.BytesIO()
    central = io.BytesIO()
    for name, data, declared in entries:
        raw_name = name.encode()
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = compressor.compress(data) + compressor.flush()
        crc = zlib.crc32(data)
        size = len(data) if declared is None else declared
        offset = local.tell()
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(packed), size, len(raw_name), 0))
        local.write(raw_name)
        local.write(packed)
        central.write(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(packed), size,
                        len(raw_name), 0, 0, 0, 0, 0, offset)
        )
        central.write(raw_name)
    body = local.getvalue()
    directory = central.getvalue()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), len(body), 0)
    return body + directory + end


def entries_of(source: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(source)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def rewrite(source: Path, target: Path, *, edit: Any = None, files: Mapping[str, bytes | None] | None = None,
            signing_key: Path | None = None) -> Path:
    """Re-write a valid bundle with an edited manifest and/or files; hashes stay consistent.

    ``edit(manifest)`` mutates a copy of the manifest; ``files`` replaces (or, with None,
    removes) entries. The result passes the container checks, so what fails is the content.
    """
    import copy

    from runtime.bundle import read_bundle

    original = read_bundle(source)
    manifest = copy.deepcopy(original.manifest)
    manifest.pop("files", None)
    if edit is not None:
        edit(manifest)
    content = dict(original.files)
    for name, data in (files or {}).items():
        if data is None:
            content.pop(name, None)
        else:
            content[name] = data
    write_bundle(target, manifest, content, signing_key=signing_key)
    return target


def edit_golden(source: Path, target: Path, change: Any) -> Path:
    """Re-write a bundle whose golden.json was changed by ``change(golden)``."""
    from runtime.bundle import read_bundle

    golden = json.loads(read_bundle(source).files["golden.json"])
    change(golden)
    return rewrite(source, target, files={"golden.json": json.dumps(golden).encode()})
