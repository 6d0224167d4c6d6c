"""Edits to a graph skl2onnx converted: what onnxruntime cannot run as converted, the
label-only classifier's placeholder output, and fixed metadata (the same model always
serialises to the same bytes)."""

from __future__ import annotations

from typing import Any


def imputers_as_where(onx: Any) -> None:
    """Rewrite ``ai.onnx.ml.Imputer`` nodes as ``Where(IsNaN(x), values, x)``.

    onnxruntime implements Imputer for float and int64 only ("NOT_IMPLEMENTED ... Imputer(1)"
    in double); the standard operators do the same thing in any precision.
    """
    import math

    import numpy as np
    from onnx import helper, numpy_helper

    nodes = list(onx.graph.node)
    if not any(n.op_type == "Imputer" and n.domain == "ai.onnx.ml" for n in nodes):
        return
    rewritten = []
    for node in nodes:
        if node.op_type != "Imputer" or node.domain != "ai.onnx.ml":
            rewritten.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values = attrs.get("imputed_value_floats")
        if not values:
            rewritten.append(node)  # int64 imputers run in onnxruntime as they are
            continue
        replaced = float(attrs.get("replaced_value_float", 0.0))
        base = node.name or node.output[0]
        const, mask = f"{base}_edgepack_values", f"{base}_edgepack_mask"
        onx.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.float64), name=const))
        if math.isnan(replaced):
            rewritten.append(helper.make_node("IsNaN", [node.input[0]], [mask], name=f"{base}_edgepack_isnan"))
        else:
            target = f"{base}_edgepack_replaced"
            onx.graph.initializer.append(numpy_helper.from_array(np.asarray(replaced, dtype=np.float64), name=target))
            rewritten.append(helper.make_node("Equal", [node.input[0], target], [mask], name=f"{base}_edgepack_equal"))
        rewritten.append(helper.make_node("Where", [mask, const, node.input[0]], [node.output[0]], name=f"{base}_edgepack_where"))
    del onx.graph.node[:]
    onx.graph.node.extend(rewritten)


PLACEHOLDER = "edgepack_no_probabilities"
"""A zero-width (N, 0) output that stands in for probabilities while the parity gate runs
a label-only classifier; ``drop_placeholder`` removes it before the bundle is written."""


def label_output_only(onx: Any) -> None:
    """Keep the label output; put the zero-width placeholder where the probabilities go.

    Converters still emit decision scores for classifiers without ``predict_proba`` (one
    column for two classes, or none at all); scikit-learn gives none to compare them with,
    so only the label is shipped and compared.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = onx.graph
    label = graph.output[0]
    del graph.output[1:]
    shape, zero, dims = f"{PLACEHOLDER}_shape", f"{PLACEHOLDER}_zero", f"{PLACEHOLDER}_dims"
    graph.initializer.append(numpy_helper.from_array(np.asarray([0], dtype=np.int64), name=zero))
    graph.node.extend(
        [
            helper.make_node("Shape", [label.name], [shape], name=f"{PLACEHOLDER}_shape_of_label"),
            helper.make_node("Concat", [shape, zero], [dims], axis=0, name=f"{PLACEHOLDER}_concat"),
            helper.make_node(
                "ConstantOfShape",
                [dims],
                [PLACEHOLDER],
                value=helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0]),
                name=f"{PLACEHOLDER}_zeros",
            ),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(PLACEHOLDER, TensorProto.FLOAT, [None, 0]))


def drop_placeholder(onx: Any) -> None:
    """Remove the placeholder output and the nodes that make it (the shipped model has the label only)."""
    graph = onx.graph
    keep_outputs = [o for o in graph.output if o.name != PLACEHOLDER]
    del graph.output[:]
    graph.output.extend(keep_outputs)
    nodes = [n for n in graph.node if not n.name.startswith(PLACEHOLDER)]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [t for t in graph.initializer if not t.name.startswith(PLACEHOLDER)]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def normalise(onx: Any) -> None:
    """Fixed metadata, so the same model always serialises to the same bytes."""
    onx.doc_string = ""
    onx.graph.doc_string = ""
    onx.graph.name = "edgepack"
    onx.domain = "edgepack"
    onx.model_version = 1
    del onx.metadata_props[:]
    # skl2onnx collects opsets in a set: their order follows PYTHONHASHSEED unless sorted.
    # onnxmltools' converters inside skl2onnx add a second entry for a domain; keep the highest.
    highest: dict[str, int] = {}
    for imp in onx.opset_import:
        highest[imp.domain] = max(int(imp.version), highest.get(imp.domain, 0))
    opsets = sorted(highest.items())
    del onx.opset_import[:]
    for domain, version in opsets:
        imp = onx.opset_import.add()
        imp.domain, imp.version = domain, version
