"""Put a ``Split`` in front of a converted graph so same-typed columns travel in one input.

One ONNX input per column costs about 2 µs per input per call in onnxruntime; one ``(N, width)``
input per dtype, split back into columns inside the graph, costs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PACKED_NAMES = {"float32": "float_input", "float64": "double_input", "string": "string_input", "int64": "int64_input"}


@dataclass(frozen=True)
class Slot:
    """Where one original feature travels in the packed graph."""

    onnx_input: str
    """The packed input's name."""
    slot: int
    """The column inside it."""
    dtype: str
    """``float32``, ``float64``, ``string`` or ``int64``."""


def _dtype_name(elem_type: int) -> str:
    from onnx import TensorProto

    names = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.STRING: "string", TensorProto.INT64: "int64"}
    if elem_type not in names:
        from .errors import ConversionError

        raise ConversionError(
            f"graph input has element type {TensorProto.DataType.Name(elem_type)}; edgepack packs float, double, string and int64 inputs"
        )
    return names[elem_type]


def _width(value_info: Any) -> int | None:
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    return int(dims[1].dim_value)


DEFAULT_OPSET = 17
"""The default-domain opset declared when a graph has none (Identity and Split live there)."""


def _default_opset(model: Any) -> int:
    """The graph's default-domain opset, declared first when missing.

    onnxmltools' XGBoost and LightGBM graphs use only ``ai.onnx.ml`` operators and declare
    only that domain; the ``Identity``/``Split`` nodes added here are default-domain nodes,
    and onnx rejects them without the import ("No opset import for domain ''").
    """
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    from onnx import helper

    imp = model.opset_import.add()
    imp.domain, imp.version = "", DEFAULT_OPSET
    # The IR version must be new enough for the opsets now declared.
    model.ir_version = max(int(model.ir_version), helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    return DEFAULT_OPSET


def pack(model: Any, per_input_columns: list[list[str]]) -> tuple[Any, dict[str, Slot], list[dict[str, Any]]]:
    """Replace the graph's inputs by one ``(N, width)`` input per dtype.

    ``per_input_columns[i]`` names the original columns that graph input ``i`` carries (one for
    a per-column input, all of them for a single matrix input). Returns the new model, where
    each column now travels, and the manifest's ``onnx_inputs`` list.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    old_inputs = list(graph.input)
    if len(old_inputs) != len(per_input_columns):
        from .errors import ConversionError

        raise ConversionError(f"graph has {len(old_inputs)} inputs, expected {len(per_input_columns)}")
    groups: dict[str, list[tuple[Any, list[str]]]] = {}
    for vi, cols in zip(old_inputs, per_input_columns):
        groups.setdefault(_dtype_name(vi.type.tensor_type.elem_type), []).append((vi, cols))

    default_opset = _default_opset(model)
    taken = {vi.name for vi in old_inputs} | {n.name for n in graph.node} | {i.name for i in graph.initializer}
    slots: dict[str, Slot] = {}
    new_inputs, new_nodes, new_inits, onnx_inputs = [], [], [], []
    for dtype in sorted(groups):
        name = PACKED_NAMES[dtype]
        while name in taken:
            name = f"edgepack_{name}"
        members = groups[dtype]
        widths = [len(cols) for _, cols in members]
        total = sum(widths)
        elem = members[0][0].type.tensor_type.elem_type
        new_inputs.append(helper.make_tensor_value_info(name, elem, [None, total]))
        onnx_inputs.append({"name": name, "dtype": dtype, "width": total})
        offset = 0
        for (_, cols), width in zip(members, widths):
            for k, col in enumerate(cols):
                slots[col] = Slot(name, offset + k, dtype)
            offset += width
        outputs = [vi.name for vi, _ in members]
        if len(outputs) == 1:
            new_nodes.append(helper.make_node("Identity", [name], outputs, name=f"edgepack_unpack_{dtype}"))
        else:
            if default_opset < 13:  # before opset 13, Split's sizes were an attribute
                new_nodes.append(helper.make_node("Split", [name], outputs, axis=1, split=widths, name=f"edgepack_unpack_{dtype}"))
            else:
                split_name = f"edgepack_split_{dtype}"
                new_inits.append(numpy_helper.from_array(np.asarray(widths, dtype=np.int64), name=split_name))
                new_nodes.append(helper.make_node("Split", [name, split_name], outputs, axis=1, name=f"edgepack_unpack_{dtype}"))

    del graph.input[:]
    graph.input.extend(new_inputs)
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    return model, slots, onnx_inputs
