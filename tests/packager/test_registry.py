"""build_bundle against a real SQLite MLflow registry: resolution, flavors, provenance,
reproducibility, signing, reference data."""

from __future__ import annotations

import json
import shutil
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml

import edgepack
from packager import (
    DEFAULT_TRUSTED_TYPES,
    BuildOptions,
    ModelNotFoundError,
    ParityError,
    ReferenceDataError,
    UnsupportedFlavorError,
    UnsupportedModelError,
    UntrustedTypesError,
    build_bundle,
)
from packager.registry import TAG_SHA256, TAG_VERSION
from runtime.bundle import read_bundle
from runtime.errors import SignatureError
from runtime.signing import generate_keypair
from tests.packager.conftest import Registry, onnx_answers
from tests.support.registry import experiment_for, fire_risk_data, mlflow_pointed_at, register_model


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _golden_matches(bundle_path: Path, model: Any) -> None:
    """golden.json holds what ``model`` answers on the golden rows."""
    golden = json.loads(read_bundle(bundle_path).files["golden.json"])
    frame = pd.DataFrame(golden["inputs"])
    frame = frame.astype({c: float for c in frame.columns if c != "region"})
    assert golden["outputs"]["label"] == model.predict(frame).tolist()
    np.testing.assert_allclose(golden["outputs"]["probabilities"], model.predict_proba(frame), atol=1e-12)


@pytest.mark.parametrize(
    ("uri", "version", "kind", "value"),
    [
        ("models:/fire@champion", "1", "alias", "champion"),
        ("models:/fire/Production", "2", "stage", "Production"),
        ("models:/fire/production", "2", "stage", "production"),
        ("models:/fire/3", "3", "version", "3"),
        ("models:/fire/latest", "3", "latest", "latest"),
    ],
)
def test_uri_resolves_to_one_version_and_builds_that_version(registry: Registry, tmp_path: Path, uri: str, version: str, kind: str, value: str) -> None:
    out = tmp_path / "fire.edgepkg"
    # fire/3 is logged as a pickle, which only loads when trusted explicitly (tests/packager/test_trust.py).
    report = build_bundle(uri, out, tracking_uri=registry.uri, options=BuildOptions(trust_pickle=version == "3"))
    assert (report.model_name, report.model_version, report.resolved) == ("fire", version, {"kind": kind, "value": value})
    bundle = read_bundle(out)
    model = bundle.manifest["model"]
    assert (model["version"], model["requested_uri"], model["resolved"]) == (version, uri, {"kind": kind, "value": value})
    mv = _client(registry.uri).get_model_version("fire", version)
    assert model["run_id"] == mv.run_id and model["created_at"] == mv.creation_timestamp
    assert model["registry_uri"] == registry.uri and model["flavor"] == "sklearn" and model["estimator"] == "Pipeline"
    assert report.sha256 == bundle.sha256 and report.size == out.stat().st_size
    _golden_matches(out, registry.models[f"fire/{version}"])


def test_alias_moved_during_the_build_does_not_change_what_is_built(registry: Registry, tmp_path: Path) -> None:
    client = _client(registry.uri)
    seen = []

    def move_alias(resolved: Any) -> None:
        seen.append(resolved.version)
        client.set_registered_model_alias("fire", "moving", "2")

    client.set_registered_model_alias("fire", "moving", "1")
    out = tmp_path / "moving.edgepkg"
    try:
        report = build_bundle("models:/fire@moving", out, tracking_uri=registry.uri, on_resolved=move_alias)
        assert str(client.get_model_version_by_alias("fire", "moving").version) == "2"  # it really moved
    finally:
        client.delete_registered_model_alias("fire", "moving")
    assert seen == ["1"] and report.model_version == "1"
    assert read_bundle(out).manifest["model"]["version"] == "1"
    # The artifacts are v1's too: the logistic regression's answers, not the tree's.
    _golden_matches(out, registry.models["fire/1"])
    # (The tree's OrdinalEncoder may also refuse a golden row whose region is missing: the
    # logistic regression's OneHotEncoder(handle_unknown="ignore") takes it.)
    with pytest.raises((AssertionError, ValueError)):
        _golden_matches(out, registry.models["fire/2"])


@pytest.mark.parametrize(
    ("uri", "listed"),
    [
        ("models:/nope/1", ["'nope'", "fire"]),
        ("models:/fire@gold", ["'gold'", "@champion -> 1"]),
        ("models:/fire/Staging", ["'Staging'", "Production (version 2)", "@champion"]),
        ("models:/fire/9", ["version 9", "1, 2, 3"]),
    ],
)
def test_what_does_not_exist_is_named_with_what_does(registry: Registry, tmp_path: Path, uri: str, listed: list[str]) -> None:
    out = tmp_path / "x.edgepkg"
    with pytest.raises(ModelNotFoundError) as err:
        build_bundle(uri, out, tracking_uri=registry.uri)
    for text in listed:
        assert text in str(err.value)
    assert not out.exists()


def test_malformed_uri_says_what_is_expected(registry: Registry, tmp_path: Path) -> None:
    from packager import RegistryError

    with pytest.raises(RegistryError, match=r"expected models:/NAME/STAGE, models:/NAME@ALIAS or models:/NAME/VERSION"):
        build_bundle("runs:/abc/model", tmp_path / "x.edgepkg", tracking_uri=registry.uri)


def test_provenance_tags_name_the_bundle_on_the_version(registry: Registry, tmp_path: Path) -> None:
    report = build_bundle("models:/fire/3", tmp_path / "p.edgepkg", tracking_uri=registry.uri, options=BuildOptions(trust_pickle=True))
    tags = _client(registry.uri).get_model_version("fire", "3").tags
    assert tags[TAG_SHA256] == report.sha256 == read_bundle(tmp_path / "p.edgepkg").sha256
    assert tags[TAG_VERSION] == edgepack.__version__ and report.tagged


def test_same_version_and_options_give_byte_identical_bundles(registry: Registry, tmp_path: Path) -> None:
    a = build_bundle("models:/fire@champion", tmp_path / "a.edgepkg", tracking_uri=registry.uri)
    b = build_bundle("models:/fire/1", tmp_path / "b.edgepkg", tracking_uri=registry.uri, options=BuildOptions(tag_registry=False))
    c = build_bundle("models:/fire@champion", tmp_path / "c.edgepkg", tracking_uri=registry.uri)
    assert a.sha256 == c.sha256 and (tmp_path / "a.edgepkg").read_bytes() == (tmp_path / "c.edgepkg").read_bytes()
    # Another way of naming the same version is recorded in the manifest, so the bytes differ there only.
    assert b.sha256 != a.sha256 and read_bundle(tmp_path / "a.edgepkg").files == read_bundle(tmp_path / "b.edgepkg").files
    d = build_bundle("models:/fire@champion", tmp_path / "d.edgepkg", tracking_uri=registry.uri, options=BuildOptions(seed=1))
    assert d.sha256 != a.sha256  # the seed really drives the synthesised rows


def test_signed_bundle_verifies_with_its_public_key_only(registry: Registry, tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    _, other = generate_keypair(tmp_path / "other")
    report = build_bundle("models:/fire/1", tmp_path / "s.edgepkg", tracking_uri=registry.uri, signing_key=private)
    assert report.signed
    assert read_bundle(tmp_path / "s.edgepkg", public_key=public).signature_verified
    with pytest.raises(SignatureError):
        read_bundle(tmp_path / "s.edgepkg", public_key=other)


def test_bundle_contents_follow_the_format(registry: Registry, tmp_path: Path) -> None:
    report = build_bundle("models:/fire@champion", tmp_path / "f.edgepkg", tracking_uri=registry.uri)
    bundle = read_bundle(tmp_path / "f.edgepkg")
    m = bundle.manifest
    assert sorted(bundle.files) == ["golden.json", "model.onnx", "requirements.txt"] == list(report.files)
    assert m["edgepack_version"] == edgepack.__version__
    assert [i["name"] for i in m["inputs"]] == ["temp c", "humidity %", "wind.speed", "region"]
    region = m["inputs"][3]
    assert region["kind"] == "categorical" and region["categories"] == ["east", "north", "south", "west"]
    # OneHotEncoder(handle_unknown="ignore") encodes a missing region as unknown (all zeros), and
    # the graph fed "" does the same: proven by the gate, so the device takes None for it.
    assert region["nullable"] is True and region["missing_string"] == ""
    # The device one-hot encodes the region itself (packager/encoded_inputs.py): four float slots.
    assert (region["onnx_input"], region["slot"]) == ("onehot_input", 0)
    assert region["encoding"] == {"kind": "one_hot", "categories": ["east", "north", "south", "west"]}
    assert {i["name"]: i["nullable"] for i in m["inputs"][:3]} == {"temp c": True, "humidity %": True, "wind.speed": True}
    assert m["onnx_inputs"] == [
        {"name": "float_input", "dtype": "float32", "width": 3},
        {"name": "onehot_input", "dtype": "float32", "width": 4},
    ]
    out = m["outputs"]
    assert (out["task"], out["classes"], out["label_values"], out["label"], out["probabilities"]) == (
        "classification", [0, 1], [0, 1], "label", "probabilities"
    )
    assert m["parity"] == report.parity and m["parity"]["rows"] >= 200 and m["parity"]["rows_with_missing"] > 0
    assert m["parity"]["onnxruntime"] == ort.__version__ and m["parity"]["max_abs_diff"] <= 1e-4
    assert m["onnx"]["precision"] == "float32" and set(m["onnx"]["producers"]) == {"skl2onnx", "onnx", "sklearn"}
    assert m["baseline"]["rows"] == 5 + BuildOptions().synth_rows  # the input example plus synthesised rows
    assert m["baseline"]["source"] == "synthesized"  # so monitoring can say how little drift against it means
    requirements = bundle.files["requirements.txt"].decode().splitlines()
    assert requirements[0] == f"onnxruntime=={ort.__version__}" and requirements[1].startswith("numpy>=")
    assert {r.split(">")[0] for r in requirements[2:]} >= {"httpx", "sqlite-utils", "cryptography"}
    assert not any(r.split(">")[0].split("=")[0] in ("mlflow", "scikit-learn", "pandas", "skl2onnx") for r in requirements)
    # The model in the bundle is self-contained and answers like the registry's model.
    X = registry.X.dropna()
    outs = onnx_answers(bundle.files["model.onnx"], m["inputs"], m["onnx_inputs"], X)
    np.testing.assert_allclose(outs[1], registry.models["fire/1"].predict_proba(X), atol=1e-4)


def test_tracking_uri_defaults_to_env_then_mlflow_db_in_working_dir(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    assert build_bundle("models:/fire/1", tmp_path / "env.edgepkg", options=BuildOptions(tag_registry=False)).model_version == "1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(registry.db, work / "mlflow.db")
    monkeypatch.chdir(work)
    report = build_bundle("models:/fire/2", "cwd.edgepkg", options=BuildOptions(tag_registry=False))
    assert report.model_version == "2" and read_bundle(work / "cwd.edgepkg").manifest["model"]["registry_uri"] == "sqlite:///mlflow.db"


def test_reference_data_files_csv_and_parquet(registry: Registry, tmp_path: Path) -> None:
    X, _ = fire_risk_data(rows=80, seed=11)
    X.to_csv(tmp_path / "ref.csv", index=False)
    X.to_parquet(tmp_path / "ref.parquet")
    a = build_bundle("models:/fire/1", tmp_path / "a.edgepkg", tracking_uri=registry.uri, reference_data=tmp_path / "ref.csv")
    b = build_bundle("models:/fire/1", tmp_path / "b.edgepkg", tracking_uri=registry.uri, reference_data=tmp_path / "ref.parquet")
    complete = int((~X.isna().any(axis=1)).sum())
    for report in (a, b):
        assert report.parity["rows"] - report.parity["rows_with_missing"] == complete
    temp = read_bundle(tmp_path / "a.edgepkg").manifest["inputs"][0]
    assert temp["range"] == pytest.approx([X["temp c"].min(), X["temp c"].max()])
    assert read_bundle(tmp_path / "a.edgepkg").manifest["baseline"]["features"]["humidity %"]["missing"] == int(X["humidity %"].isna().sum())
    assert read_bundle(tmp_path / "a.edgepkg").manifest["baseline"]["source"] == "reference"

    X.drop(columns=["region"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ReferenceDataError, match=r"lacks the model's columns \['region'\]"):
        build_bundle("models:/fire/1", tmp_path / "c.edgepkg", tracking_uri=registry.uri, reference_data=tmp_path / "short.csv")
    (tmp_path / "ref.txt").write_text("x")
    with pytest.raises(ReferenceDataError, match="expected .csv or .parquet"):
        build_bundle("models:/fire/1", tmp_path / "c.edgepkg", tracking_uri=registry.uri, reference_data=tmp_path / "ref.txt")
    assert not (tmp_path / "c.edgepkg").exists()


def test_parity_failure_writes_nothing_and_tags_nothing(registry: Registry, tmp_path: Path) -> None:
    client = _client(registry.uri)
    register_model(registry.uri, "strict", registry.models["fire/1"], registry.X)
    out = tmp_path / "strict.edgepkg"
    with pytest.raises(ParityError, match="worst rows"):
        build_bundle("models:/strict/1", out, tracking_uri=registry.uri, options=BuildOptions(abs_tolerance=0.0, rel_tolerance=0.0))
    assert not out.exists() and not list(tmp_path.iterdir())
    assert TAG_SHA256 not in client.get_model_version("strict", "1").tags


def test_unsupported_step_is_named_before_any_conversion(registry: Registry, tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, SplineTransformer

    X = registry.X.dropna()
    y = registry.models["fire/1"].predict(X)
    pre = ColumnTransformer([("num", SplineTransformer(n_knots=3), ["temp c"]), ("cat", OneHotEncoder(), ["region"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(X, y)
    register_model(registry.uri, "splines", model, X)
    import skops.io

    # SplineTransformer holds scipy types skops does not trust: the user has reviewed them.
    trusted = (*DEFAULT_TRUSTED_TYPES, *skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    with pytest.raises(UnsupportedModelError) as err:
        build_bundle("models:/splines/1", tmp_path / "s.edgepkg", tracking_uri=registry.uri, options=BuildOptions(trusted_types=trusted))
    assert (err.value.step, err.value.cls) == ("pre/num", "SplineTransformer")
    assert "step 'pre/num'" in str(err.value) and "has no ONNX converter" in str(err.value) and "update_registered_converter" in str(err.value)


def test_skops_types_come_from_the_users_list_not_from_the_logged_one(registry: Registry, tmp_path: Path) -> None:
    version = register_model(registry.uri, "untrusted", registry.models["fire/1"], registry.X)
    # MLflow 3.17 checks trusted types at logging time; models logged by other tools or older
    # MLflow versions carry no such list. Make this one look like that: the logged list never
    # mattered, so the build is the same, and without numpy.dtype in the user's list it fails.
    location = Path(_client(registry.uri).get_model_version_download_uri("untrusted", version).removeprefix("file://"))
    mlmodel = yaml.safe_load((location / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["skops_trusted_types"]
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = None
    (location / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    assert build_bundle("models:/untrusted/1", tmp_path / "u.edgepkg", tracking_uri=registry.uri).model_version == "1"
    with pytest.raises(UntrustedTypesError) as err:
        build_bundle("models:/untrusted/1", tmp_path / "v.edgepkg", tracking_uri=registry.uri, options=BuildOptions(trusted_types=()))
    assert err.value.types == ["numpy.dtype"]
    assert "numpy.dtype" in str(err.value) and "--trust-type numpy.dtype" in str(err.value)


class _Echo:  # a pyfunc-only model: no flavor edgepack can convert
    def predict(self, context: Any, model_input: Any) -> Any:
        return model_input


def test_other_flavors_are_refused_naming_what_the_model_has(registry: Registry, tmp_path: Path) -> None:
    import mlflow.pyfunc

    with mlflow_pointed_at(registry.uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        python_model = type("Echo", (mlflow.pyfunc.PythonModel,), {"predict": _Echo.predict})()
        with mlflow.start_run(experiment_id=experiment_for(registry.uri)):
            mlflow.pyfunc.log_model(name="model", python_model=python_model, registered_model_name="echo", pip_requirements=[])
    with pytest.raises(UnsupportedFlavorError) as err:
        build_bundle("models:/echo/1", tmp_path / "e.edgepkg", tracking_uri=registry.uri)
    assert "python_function" in str(err.value) and "sklearn, xgboost, lightgbm, onnx" in str(err.value)


def test_onnx_flavor_with_external_data_is_shipped_self_contained(registry: Registry, tmp_path: Path) -> None:
    import mlflow.onnx
    import onnx
    from onnx import numpy_helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = registry.X.dropna()[["temp c", "humidity %", "wind.speed"]]
    y = np.where(registry.models["fire/1"].predict(registry.X.dropna()) == 1, "risk", "calm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=200, random_state=0)).fit(X, y)
    # ZipMap left on, as most ONNX classifiers in the wild have it.
    onx = to_onnx(mlp, initial_types=[("X", FloatTensorType([None, 3]))], target_opset={"": 17, "ai.onnx.ml": 3})
    for init in onx.graph.initializer:  # raw_data, so that onnx moves the large ones to an external file
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
    with mlflow_pointed_at(registry.uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=experiment_for(registry.uri)):
            mlflow.onnx.log_model(onx, name="model", registered_model_name="mlp-onnx", input_example=X.head(5).astype("float32"))
    location = Path(_client(registry.uri).get_model_version_download_uri("mlp-onnx", "1").removeprefix("file://"))
    logged = onnx.load(str(location / "model.onnx"), load_external_data=False)
    external = [t.name for t in logged.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "expected MLflow to store the large tensors as external data"

    report = build_bundle("models:/mlp-onnx/1", tmp_path / "o.edgepkg", tracking_uri=registry.uri)
    bundle = read_bundle(tmp_path / "o.edgepkg")
    m = bundle.manifest
    assert m["model"]["flavor"] == "onnx" and report.flavor == "onnx"
    assert [i["name"] for i in m["inputs"]] == ["temp c", "humidity %", "wind.speed"]
    assert m["outputs"]["classes"] == ["calm", "risk"] and m["outputs"]["task"] == "classification"
    # Loads from bytes alone (no external files) and answers like the sklearn model it came from.
    outs = onnx_answers(bundle.files["model.onnx"], m["inputs"], m["onnx_inputs"], X)
    assert outs[0].tolist() == mlp.predict(X).tolist()
    np.testing.assert_allclose(outs[1], mlp.predict_proba(X), atol=1e-4)


def test_with_deps_adds_the_device_wheels_to_the_bundle(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real wheels need PyPI and minutes; packager.wheels has its own tests. Here: the contract.
    calls = []

    def device_wheels(platforms: Any, python_version: str, requirements: Any) -> dict[str, bytes]:
        calls.append((list(platforms), python_version, list(requirements)))
        return {f"wheels/{p}/edgepack-0.1.0-py3-none-any.whl": p.encode() for p in platforms}

    stub = types.ModuleType("packager.wheels")
    stub.device_wheels = device_wheels  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "packager.wheels", stub)
    monkeypatch.setattr(sys.modules["packager"], "wheels", stub, raising=False)
    report = build_bundle(
        "models:/fire/1", tmp_path / "w.edgepkg", tracking_uri=registry.uri,
        with_deps=("manylinux_2_28_aarch64", "linux_armv7l"), python_version="3.11",
        options=BuildOptions(tag_registry=False),
    )
    bundle = read_bundle(tmp_path / "w.edgepkg")
    assert calls[0][:2] == (["manylinux_2_28_aarch64", "linux_armv7l"], "3.11")
    assert calls[0][2] == bundle.files["requirements.txt"].decode().splitlines()
    assert bundle.files["wheels/linux_armv7l/edgepack-0.1.0-py3-none-any.whl"] == b"linux_armv7l"
    assert "wheels/manylinux_2_28_aarch64/edgepack-0.1.0-py3-none-any.whl" in report.files
