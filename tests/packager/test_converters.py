"""The converter registry: what is converted, by which converter, what is refused up front
and how a converter's failure is reported."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from packager import BuildOptions, UnsupportedModelError
from packager.artifacts import sklearn_artifacts
from packager.converters import check_supported, for_conversion
from packager.errors import ConversionError
from packager.registry import LoadedModel
from tests.packager import zoo


def _artifacts(model: Any, train: pd.DataFrame, ref: pd.DataFrame | None = None) -> Any:
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=train.head(5), signature_columns=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sklearn_artifacts(loaded, ref, BuildOptions())


def test_every_step_is_reported_with_the_converter_that_handles_it() -> None:
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    train, y, _ref, _held = zoo.frames("numericints", "classification")
    pre = ColumnTransformer([("num", Pipeline([("scale", StandardScaler()), ("pca", PCA(3))]), list(train.columns))])
    model = Pipeline([("pre", pre), ("model", xgboost.XGBClassifier(n_estimators=3))]).fit(train, y)
    handled = {h.step: h.converter for h in check_supported(model)}
    assert handled == {
        "": "skl2onnx:SklearnPipeline",
        "pre": "skl2onnx:SklearnColumnTransformer",
        "pre/num": "skl2onnx:SklearnPipeline",
        "pre/num/scale": "skl2onnx:SklearnScaler",
        "pre/num/pca": "skl2onnx:SklearnPCA",
        "model": "onnxmltools:XGBoostXGBClassifier",
    }
    art = _artifacts(model, train)
    assert {c["step"]: c["converter"] for c in art.converters} == handled
    assert "onnxmltools" in art.producers and "xgboost" in art.producers


def test_known_wrong_settings_inside_meta_estimators_are_found() -> None:
    from sklearn.ensemble import BaggingClassifier
    from sklearn.svm import SVC

    train, y, _ref, _held = zoo.frames("numeric", "classification")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SVC(probability=True) is deprecated in 1.9
        model = BaggingClassifier(SVC(probability=True), n_estimators=2, random_state=0).fit(train, y)
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(model)
    assert err.value.step == "estimators_[0]" and err.value.cls == "SVC"
    assert "step 'estimators_[0]' (SVC) is refused" in str(err.value) and "probability=False" in str(err.value)


def test_a_converter_failure_names_the_step_it_failed_on_and_is_not_a_parity_error() -> None:
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    train, y, _ref, _held = zoo.frames("numeric", "classification")
    model = Pipeline([("scale", StandardScaler()), ("gp", GaussianProcessClassifier(random_state=0))]).fit(train.head(60), y[:60])
    with pytest.raises(ConversionError) as err:
        _artifacts(model, train)
    # skl2onnx's message ("Only binary classification is iplemented") names no class: the
    # step comes from the converter's own frames.
    assert (err.value.step, err.value.cls) == ("gp", "GaussianProcessClassifier")
    assert "step 'gp'" in str(err.value) and "not a parity failure" in str(err.value)


def test_xgboost_feature_names_that_are_not_f0_fn_convert_without_touching_the_model() -> None:
    import xgboost

    train, y, ref, held = zoo.frames("numericints", "classification")
    assert list(train.columns) == zoo.COLUMNS  # "temp c", "wind.speed", ...
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(train, y)
    copy = for_conversion(model)
    assert copy is not model and copy.get_booster().feature_names is None
    assert model.get_booster().feature_names == zoo.COLUMNS
    art = _artifacts(model, train, ref)
    assert [i["name"] for i in art.inputs] == zoo.COLUMNS


def test_lightgbm_sanitised_feature_names_map_back_to_the_data_columns() -> None:
    import lightgbm

    train, y, ref, _held = zoo.frames("numeric", "regression")
    model = lightgbm.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1).fit(train, y)
    assert "temp_c" in list(model.feature_names_in_)  # LightGBM's own spelling
    art = _artifacts(model, train, ref)
    assert [i["name"] for i in art.inputs] == zoo.COLUMNS


def test_packing_declares_the_default_opset_of_an_ml_only_graph() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from packager.packing import pack

    # An ai.onnx.ml-only graph, the way onnxmltools' XGBoost converter writes them.
    node = helper.make_node("Normalizer", ["X"], ["Y"], domain="ai.onnx.ml", norm="L1")
    graph = helper.make_graph(
        [node], "ml", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    packed, slots, _ = pack(model, [["a", "b"]])
    onnx.checker.check_model(packed)  # "No opset import for domain ''" before
    assert {imp.domain for imp in packed.opset_import} == {"", "ai.onnx.ml"}
    out = ort.InferenceSession(packed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"float_input": np.asarray([[1.0, 3.0]], np.float32)})
    np.testing.assert_allclose(out[0], [[0.25, 0.75]])
    assert slots["b"].slot == 1
