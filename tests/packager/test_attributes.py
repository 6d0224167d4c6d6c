"""No boolean reaches an integer ONNX attribute during a build: protobuf 6 warns about it
("AttributeProto.ints: Expected an int, got a boolean ... rejected in 7.34.0") and protobuf 7
refuses it, which broke every HistGradientBoosting conversion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from packager import BuildOptions
from packager.attributes import as_ints
from packager.artifacts import sklearn_artifacts
from packager.registry import LoadedModel

_BOOL_WARNING = "error:.*Expected an int, got a boolean"


@pytest.mark.filterwarnings(_BOOL_WARNING)
def test_hist_gradient_boosting_builds_without_the_boolean_attribute_warning() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    X.loc[::10, "a"] = np.nan  # missing values: the trees carry missing_go_to_left flags
    y = (X["a"].fillna(0) + X["b"] > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=X.head(5), signature_columns=None)
    art = sklearn_artifacts(loaded, X, BuildOptions())
    assert art.parity["precision"] in ("float32", "float64")
    assert {i["name"]: i["nullable"] for i in art.inputs} == {"a": True, "b": True}


def test_booleans_become_the_integers_onnx_means() -> None:
    assert as_ints([False, np.True_, 3]) == [0, 1, 3] and all(type(v) is int for v in as_ints([False, np.True_]))
    assert as_ints((True,)) == (1,)
    assert as_ints(np.array([True, False])).dtype == np.int64
    assert as_ints(True) == 1 and type(as_ints(True)) is int
    floats = np.array([0.5, 1.5], dtype=np.float32)
    assert as_ints(floats) is floats and as_ints("SOFTMAX") == "SOFTMAX" and as_ints([1.0, 2]) == [1.0, 2]
