"""The Open Inference Protocol (V2, REST/JSON) for one edgepack model.

Each original feature is one input tensor named after the feature, shape ``[-1]`` (one
element per row; ``[N, 1]`` is accepted too), datatype ``FP32``/``FP64`` for float
features (any numeric datatype is accepted), ``INT64`` for integer features (any integer
datatype), ``BYTES`` for strings. ``null`` elements are missing values, which the runtime
takes for nullable features (JSON has no NaN).

Outputs:

- ``prediction``, shape ``[N]``: the label (``INT64``, ``BOOL`` or ``BYTES``, as the
  model's classes are) or the regression value (``FP64``);
- ``probabilities``, shape ``[N, C]`` (classification only), ``FP64``, columns in the
  order of the ``classes`` parameter (a JSON list, also in the model metadata);
- ``flags``, shape ``[N]``, ``BYTES``: each row's guardrail flags as a JSON list.

Values are exactly those of ``EdgeModel.predict`` on the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime import EdgeModel

from .errors import RequestError

DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
INTEGER = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
FLOAT = frozenset({"FP16", "FP32", "FP64"})
ADVERTISED = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
ACCEPTED = {"float32": INTEGER | FLOAT, "float64": INTEGER | FLOAT, "int64": INTEGER, "string": frozenset({"BYTES"})}
TAKES = {"float32": "numbers", "float64": "numbers", "int64": "integers", "string": "strings"}
OUTPUTS = ("prediction", "probabilities", "flags")


def _label_datatype(classes: tuple[Any, ...]) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, str) for c in classes):
        return "BYTES"
    return "FP64"


def _element_ok(datatype: str, value: Any) -> bool:
    if value is None:
        return True  # a missing value; the runtime decides whether the feature takes one
    t = type(value)
    if datatype == "BYTES":
        return t is str
    if datatype == "BOOL":
        return t is bool
    if datatype in INTEGER:
        return t is int
    return t is int or t is float


def _flatten(data: list[Any]) -> list[Any]:
    if not any(type(v) is list for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                if len(stack) > 32:
                    raise ValueError("nested deeper than 32 levels")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


@dataclass(frozen=True)
class ModelProtocol:
    """What the protocol needs of one loaded model, computed once per model."""

    model: EdgeModel
    metadata: dict[str, Any]
    features: Mapping[str, Any]
    label_datatype: str
    classes_json: str | None

    @classmethod
    def of(cls, model: EdgeModel) -> ModelProtocol:
        classes = model.classes
        label = "FP64" if classes is None else _label_datatype(classes)
        classes_json = None if classes is None else json.dumps(list(classes))
        outputs: list[dict[str, Any]] = [{"name": "prediction", "datatype": label, "shape": [-1]}]
        if classes_json is not None:
            outputs.append(
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)], "parameters": {"classes": classes_json}}
            )
        outputs.append({"name": "flags", "datatype": "BYTES", "shape": [-1]})
        metadata = {
            "name": model.name,
            "versions": [model.version],
            "platform": "onnxruntime",
            "inputs": [{"name": f.name, "datatype": ADVERTISED[f.dtype], "shape": [-1]} for f in model.inputs],
            "outputs": outputs,
            "parameters": {"task": model.task, "bundle_sha256": model.sha256},
        }
        return cls(model, metadata, {f.name: f for f in model.inputs}, label, classes_json)

    # -- request ------------------------------------------------------------------------

    def rows(self, request: Any) -> tuple[list[dict[str, Any]], int, tuple[str, ...]]:
        """Rows (feature -> value) from an inference request, their count, the outputs asked for."""
        if not isinstance(request, dict):
            raise RequestError(400, "an inference request must be a JSON object with an 'inputs' list")
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise RequestError(400, "'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
        columns: dict[str, list[Any]] = {}
        count: int | None = None
        for position, tensor in enumerate(inputs):
            name, column = self._column(position, tensor)
            if name in columns:
                raise RequestError(422, f"input {name!r} is given twice")
            if count is None:
                count = len(column)
            elif len(column) != count:
                first = next(iter(columns))
                raise RequestError(
                    422, f"input {name!r} has {len(column)} rows but input {first!r} has {count}; every input needs one element per row"
                )
            columns[name] = column
        names = list(columns)
        rows = [dict(zip(names, values)) for values in zip(*columns.values())]
        return rows, count or 0, self._outputs(request.get("outputs"))

    def _column(self, position: int, tensor: Any) -> tuple[str, list[Any]]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(400, f"inputs[{position}] must be an object with a string 'name'")
        name = tensor["name"]
        feature = self.features.get(name)
        if feature is None:
            raise RequestError(
                422, f"input {name!r} is not an input of {self.model.name}; its inputs are: {', '.join(map(repr, self.features))}"
            )
        datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
        expected = ADVERTISED[feature.dtype]
        if datatype not in DATATYPES:
            raise RequestError(422, f"input {name!r} has datatype {datatype!r}, which is not an Open Inference Protocol datatype; expected {expected}")
        if datatype not in ACCEPTED[feature.dtype]:
            raise RequestError(
                422, f"input {name!r} has datatype {datatype} but feature {name!r} takes {TAKES[feature.dtype]}; send it as {expected}"
            )
        if (
            not isinstance(shape, list)
            or not all(type(d) is int and d >= 0 for d in shape)
            or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
        ):
            raise RequestError(422, f"input {name!r} has shape {shape!r}; expected [N] or [N, 1] (one element per row)")
        if not isinstance(data, list):
            raise RequestError(422, f"input {name!r} needs 'data' as a JSON array of {shape[0]} element(s)")
        try:
            flat = _flatten(data)
        except ValueError as exc:
            raise RequestError(422, f"input {name!r}: data is {exc}") from exc
        if len(flat) != shape[0]:
            raise RequestError(422, f"input {name!r} has shape {shape} but {len(flat)} data element(s); they must agree")
        for index, value in enumerate(flat):
            if not _element_ok(datatype, value):
                raise RequestError(422, f"input {name!r}: element {index} is {json.dumps(value)}, not a {datatype} value")
        return name, flat

    def _outputs(self, requested: Any) -> tuple[str, ...]:
        available = tuple(o["name"] for o in self.metadata["outputs"])
        if requested is None:
            return available
        if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
            raise RequestError(400, "'outputs' must be a list of objects with a string 'name'")
        names = tuple(o["name"] for o in requested)
        for name in names:
            if name not in available:
                raise RequestError(422, f"output {name!r} is not an output of {self.model.name}; its outputs are: {', '.join(available)}")
        return names

    # -- response -----------------------------------------------------------------------

    def response(self, model: EdgeModel, results: list[dict[str, Any]], outputs: tuple[str, ...], request_id: Any) -> dict[str, Any]:
        n = len(results)
        tensors = []
        for name in outputs:
            if name == "prediction":
                tensors.append({"name": name, "datatype": self.label_datatype, "shape": [n], "data": [r["prediction"] for r in results]})
            elif name == "probabilities":
                classes = model.classes or ()
                data = [r["probabilities"][c] for r in results for c in classes]
                tensors.append(
                    {"name": name, "datatype": "FP64", "shape": [n, len(classes)], "data": data, "parameters": {"classes": self.classes_json}}
                )
            else:
                tensors.append({"name": name, "datatype": "BYTES", "shape": [n], "data": [json.dumps(r["flags"]) for r in results]})
        body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": tensors}
        if isinstance(request_id, str):
            body["id"] = request_id
        return body
