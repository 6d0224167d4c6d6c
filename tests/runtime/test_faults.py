"""onnxruntime failing at run time: translated to PredictionError, the model keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from runtime import PredictionError
from runtime.bundle import write_bundle


def _reshaping_bundle(path: Path, rows: int) -> Path:
    """A real model that runs only on batches of exactly ``rows`` rows (Reshape to [rows])."""
    shape = numpy_helper.from_array(np.array([rows], dtype=np.int64), "one")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["float_input", "one"], ["variable"])],
        "one-row",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest = {
        "model": {"name": "one-row", "version": "1"},
        "inputs": [{"name": "x", "onnx_input": "float_input", "slot": 0, "dtype": "float32", "kind": "numeric",
                    "nullable": False, "range": [0.0, 10.0], "categories": None}],
        "onnx_inputs": [{"name": "float_input", "dtype": "float32", "width": 1}],
        "outputs": {"task": "regression", "prediction": "variable", "target_range": [0.0, 10.0]},
    }
    values = [2.5 + i for i in range(rows)]
    golden = {"inputs": {"x": values}, "outputs": {"prediction": values}, "tolerance": {"abs": 1e-6, "rel": 1e-6}}
    write_bundle(path, manifest, {"model.onnx": model.SerializeToString(), "golden.json": json.dumps(golden).encode(),
                                  "requirements.txt": b"onnxruntime\n"})
    return path


@pytest.fixture(scope="module")
def one_row_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reshaping_bundle(tmp_path_factory.mktemp("faults") / "one-row.edgepkg", 1)


def test_model_that_fails_on_a_single_row_does_not_load(tmp_path: Path) -> None:
    path = _reshaping_bundle(tmp_path / "two-rows.edgepkg", 2)
    with pytest.raises(runtime.SelfTestError, match="golden.json: golden row 0 alone cannot be predicted: onnxruntime failed to run the model"):
        runtime.load(path)


def test_run_failure_is_a_prediction_error_and_the_model_keeps_working(one_row_only: Path) -> None:
    model = runtime.load(one_row_only)
    assert model.predict({"x": 4.0}) == {"prediction": 4.0, "flags": []}
    with pytest.raises(PredictionError, match="onnxruntime failed to run the model: .*Reshape") as info:
        model.predict_batch({"x": [1.0, 2.0]})
    assert isinstance(info.value.__cause__, Exception) and not isinstance(info.value.__cause__, runtime.EdgeError)
    with pytest.raises(PredictionError):
        model.predict([{"x": 1.0}, {"x": 2.0}])
    assert model.predict({"x": 12.0}) == {"prediction": 12.0, "flags": ["out_of_range:x", "prediction_out_of_range"]}


def test_cli_regression_lines_have_no_probabilities(one_row_only: Path) -> None:
    from click.testing import CliRunner

    from edgepack.cli import cli

    result = CliRunner().invoke(cli, ["predict", str(one_row_only)], input='{"x": 1.0}\n{"x": "a"}\n')
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1
    assert lines[0] == {"row": 1, "prediction": 1.0, "flags": []}
    assert lines[1]["row"] == 2 and "feature 'x' got str 'a'" in lines[1]["error"]
