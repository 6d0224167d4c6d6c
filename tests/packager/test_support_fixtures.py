"""The shared registry fixtures other areas build on do what tests/support/registry.py says."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from runtime.bundle import read_bundle
from tests.support.registry import BuiltBundle, fire_risk_data, fire_risk_pipeline, mlflow_pointed_at, register_model


def test_tracking_uri_is_a_fresh_registry_in_tmp_path_and_register_model_fills_it(tracking_uri: str, tmp_path: Any) -> None:
    from mlflow import MlflowClient

    assert tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert os.environ["MLFLOW_TRACKING_URI"] == os.environ["MLFLOW_REGISTRY_URI"] == tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert client.search_registered_models() == []
    X, y = fire_risk_data(rows=60)
    model = fire_risk_pipeline().fit(X, y)
    assert register_model(tracking_uri, "m", model, X, alias="champion") == "1"
    assert register_model(tracking_uri, "m", model, X, stage="Production", serialization="pickle") == "2"
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    v2 = client.get_model_version("m", "2")
    assert v2.current_stage == "Production"
    location = client.get_model_version_download_uri("m", "2").removeprefix("file://")
    assert location.startswith(str(tmp_path)) and os.path.exists(os.path.join(location, "model.pkl"))

    with mlflow_pointed_at(tracking_uri) as mlflow, mlflow.start_run() as run:  # no experiment given
        mlflow.log_text("x", "note.txt")
    assert run.info.artifact_uri.removeprefix("file://").startswith(str(tmp_path))
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking_uri  # put back as the fixture set it


@pytest.mark.parametrize(
    ("kind", "task", "resolved", "classes"),
    [
        ("binary", "classification", "alias", [0, 1]),
        ("multiclass", "classification", "stage", ["setosa", "versicolor", "virginica"]),
        ("regression", "regression", "version", None),
    ],
)
def test_make_bundle_kinds(make_bundle: Callable[[str], BuiltBundle], kind: str, task: str, resolved: str, classes: Any) -> None:
    built = make_bundle(kind)
    manifest = read_bundle(built.path).manifest
    assert manifest["outputs"]["task"] == task and manifest["outputs"]["classes"] == classes
    assert manifest["model"]["resolved"]["kind"] == resolved
    assert [i["name"] for i in manifest["inputs"]] == [str(c) for c in built.frame.columns]
    assert built.report.sha256 == read_bundle(built.path).sha256


def test_signed_bundle_fixture_verifies_with_its_public_key(signed_bundle: BuiltBundle, fire_risk_bundle: Any) -> None:
    assert read_bundle(signed_bundle.path, public_key=signed_bundle.public_key).signature_verified
    assert read_bundle(fire_risk_bundle).signature is None
