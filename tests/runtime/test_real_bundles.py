"""The runtime on bundles built by the packager from a real MLflow registry (tests/support)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from edgepack.cli import cli
from tests.support.registry import BuiltBundle


def _records(frame: Any) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_classifiers_match_the_registered_model(make_bundle: Callable[[str], BuiltBundle], kind: str) -> None:
    built = make_bundle(kind)
    model = runtime.load(built.path)
    assert model.name == built.report.model_name and model.version == built.report.model_version
    assert [f.name for f in model.inputs] == [str(c) for c in built.frame.columns]  # original names, spaces and all
    frame = built.frame.iloc[:50]
    expected = built.model.predict_proba(frame)
    labels = built.model.predict(frame)
    results = model.predict(_records(frame))
    assert [r["prediction"] for r in results] == [x.item() if hasattr(x, "item") else x for x in labels]
    assert np.allclose([list(r["probabilities"].values()) for r in results], expected, atol=1e-4)
    assert model.predict(frame) == results
    batch = model.predict_batch({c: frame[c].to_numpy() for c in frame.columns})
    assert np.allclose(batch["probabilities"], expected, atol=1e-4)


def test_binary_with_missing_values_and_unseen_region(make_bundle: Callable[[str], BuiltBundle]) -> None:
    built = make_bundle("binary")
    model = runtime.load(built.path)
    row = {"temp c": 30.0, "humidity %": None, "wind.speed": 9.0, "region": "highlands"}
    result = model.predict(row)
    assert "unseen_category:region" in result["flags"]
    import pandas as pd

    expected = built.model.predict_proba(pd.DataFrame([{**row, "humidity %": np.nan}]))[0]
    assert np.allclose(list(result["probabilities"].values()), expected, atol=1e-4)
    with pytest.raises(runtime.InputError, match="feature 'region' got int 7"):
        model.predict({**row, "region": 7})


def test_regression_matches_the_registered_model(make_bundle: Callable[[str], BuiltBundle]) -> None:
    built = make_bundle("regression")
    model = runtime.load(built.path)
    assert model.task == "regression" and model.classes is None
    frame = built.frame.iloc[:50]
    got = np.array([r["prediction"] for r in model.predict(_records(frame))])
    close = np.isclose(got, built.model.predict(frame), rtol=1e-4, atol=1e-3)
    assert close.mean() >= 0.9


def test_signed_bundle_requires_its_key(make_bundle: Callable[[str], BuiltBundle]) -> None:
    built = make_bundle("signed")
    model = runtime.load(built.path, public_key=built.public_key, require_signature=True)
    assert model.signature_verified
    result = CliRunner().invoke(cli, ["verify", str(built.path), "--public-key", str(built.public_key), "--require-signature"])
    assert result.exit_code == 0, result.output
    assert "signature verified" in result.stdout
    unsigned = make_bundle("binary")
    with pytest.raises(runtime.SignatureError):
        runtime.load(unsigned.path, public_key=built.public_key)


def test_swap_between_packager_bundles(make_bundle: Callable[[str], BuiltBundle]) -> None:
    binary, signed, iris = make_bundle("binary"), make_bundle("signed"), make_bundle("multiclass")
    slot = runtime.ModelSlot(binary.path)
    slot.swap(signed.path)  # same model and inputs, other bytes
    assert slot.model.sha256 != slot.previous.sha256  # type: ignore[union-attr]
    with pytest.raises(runtime.SchemaChangeError):
        slot.swap(iris.path)


def test_cli_predict_on_packager_bundle(make_bundle: Callable[[str], BuiltBundle]) -> None:
    built = make_bundle("multiclass")
    rows = _records(built.frame.iloc[:3])
    result = CliRunner().invoke(cli, ["predict", str(built.path)], input="\n".join(json.dumps(r) for r in rows) + "\n")
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["prediction"] for o in out] == [str(x) for x in built.model.predict(built.frame.iloc[:3])]
    assert set(out[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}
