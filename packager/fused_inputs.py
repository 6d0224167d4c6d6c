"""Fuse same-typed graph inputs that are only scaled and then concatenated into one input.

Once the runtime feeds one-hot floats (packager/encoded_inputs.py), a ColumnTransformer's
graph reads two float inputs: the numeric columns, scaled (``Sub``, ``Div``), and the one-hot
columns, as they are; a ``Concat`` then joins them in front of the model. Each input and
the ``Concat`` cost onnxruntime time on every single-row run (about 1.3 µs of 10 on the
benchmark forest), and the runtime one more buffer to pack.

Here a ``Concat`` along axis 1 whose every operand is a whole graph input, either as it is
or through the same chain of element-wise ``Sub``/``Add``/``Mul``/``Div`` by constants (or
``ai.onnx.ml`` ``Scaler``s, which float32 graphs scale with), becomes
that chain on one input that carries all the columns in the ``Concat``'s order. The chain's
constants are widened with the identity of each operation over the columns that had none
(``x - 0``, ``x + -0.0``, ``x * 1``, ``x / 1``, ``(x - 0) * 1`` are ``x`` exactly, for every float including
NaN, infinities and -0.0), so the values that reach the model are the same bits.
"""

from __future__ import annotations

from typing import Any

from .packing import Slot
from .simplify import DEFAULT_DOMAINS, ML_DOMAIN, _attrs, _prune, _replace_node
IDENTITY = {"Sub": 0.0, "Add": -0.0, "Mul": 1.0, "Div": 1.0}
"""Each element-wise operation's right operand that leaves every float as it is."""


def _chain(start: str, consumers: dict[str, list[Any]], constants: dict[str, Any], width: int, end: str) -> list[tuple[str, Any]] | None:
    """[(op, constant as (width,) array)] from graph input ``start`` to ``end``, or None."""
    import numpy as np

    ops: list[tuple[str, Any]] = []
    name = start
    while name != end:
        found = consumers.get(name, [])
        if len(found) != 1:
            return None
        node = found[0]
        if node.op_type == "Scaler" and node.domain == ML_DOMAIN and list(node.input) == [name]:
            # ai.onnx.ml's Scaler, (x - offset) * scale per column: float32 graphs scale this way.
            attrs = _attrs(node)
            offset, scale = np.asarray(attrs.get("offset", [0.0]), dtype=np.float32), np.asarray(attrs.get("scale", [1.0]), dtype=np.float32)
            if offset.size not in (1, width) or scale.size not in (1, width):
                return None
            ops.append(("Scaler", (np.broadcast_to(offset, (width,)), np.broadcast_to(scale, (width,)))))
            name = node.output[0]
            continue
        if node.op_type not in IDENTITY or node.domain not in DEFAULT_DOMAINS or node.input[0] != name:
            return None
        const = constants.get(node.input[1])
        if const is None or const.size not in (1, width) or const.ndim > 2 or (const.ndim == 2 and const.shape[0] != 1):
            return None
        ops.append((node.op_type, np.broadcast_to(const.reshape(-1), (width,))))
        name = node.output[0]
        if len(ops) > 8:
            return None
    return ops


def fuse_inputs(onx: Any, slots: dict[str, Slot], onnx_inputs: list[dict[str, Any]]) -> tuple[dict[str, Slot], list[dict[str, Any]]]:
    """Apply the rewrite of the module docstring to ``onx`` in place where it applies; the new
    (slots, onnx_inputs), or the given ones unchanged."""
    from onnx import numpy_helper

    graph = onx.graph
    if any(a.HasField("g") or len(a.graphs) for n in graph.node for a in n.attribute):
        return slots, onnx_inputs
    specs = {spec["name"]: spec for spec in onnx_inputs}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for concat in graph.node:
        if concat.op_type != "Concat" or concat.domain not in DEFAULT_DOMAINS:
            continue
        attrs = _attrs(concat)
        if attrs.get("axis") not in (1, -1) or len(concat.input) < 2:
            continue
        found = []
        for operand in concat.input:
            source = operand
            while source not in specs and source in producer:
                source = producer[source].input[0]
            spec = specs.get(source)
            if spec is None or spec["dtype"] not in ("float32", "float64") or operand in outputs or len(consumers.get(operand, [])) != 1:
                break  # (an operand read elsewhere too must keep its own columns)
            chain = _chain(source, consumers, constants, int(spec["width"]), operand)
            if chain is None:
                break
            found.append((spec, chain))
        else:
            fused = _fuse(onx, concat, found, slots, onnx_inputs, outputs)
            if fused is not None:
                return fused
    return slots, onnx_inputs


def _fuse(onx: Any, concat: Any, found: list[tuple[dict[str, Any], list[tuple[str, Any]]]], slots: dict[str, Slot], onnx_inputs: list[dict[str, Any]], outputs: set[str]) -> tuple[dict[str, Slot], list[dict[str, Any]]] | None:
    import numpy as np
    from onnx import helper, numpy_helper

    names = [spec["name"] for spec, _ in found]
    dtypes = {spec["dtype"] for spec, _ in found}
    if len(set(names)) != len(names) or len(dtypes) != 1:
        return None
    chains = [chain for _, chain in found if chain]
    ops = [op for op, _ in chains[0]] if chains else []
    if any([op for op, _ in chain] != ops for chain in chains):
        return None  # different operations per operand: no one chain does them all
    dtype = dtypes.pop()
    np_dtype = np.float32 if dtype == "float32" else np.float64
    graph = onx.graph
    if not ops and concat.output[0] in outputs:
        return None  # the Concat's output is the graph's: an input cannot stand for it
    fused = names[0]  # the first operand's input name carries all columns now
    offsets, offset = {}, 0
    for spec, _ in found:
        offsets[spec["name"]] = offset
        offset += int(spec["width"])
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    new_nodes, new_inits = [], []
    current = fused
    for k, op in enumerate(ops):
        base = f"{concat.output[0]}_edgepack_fused_{k}"
        if op == "Scaler":
            offsets_ = [chain[k][1][0] if chain else np.zeros(int(spec["width"]), np.float32) for spec, chain in found]
            scales = [chain[k][1][1] if chain else np.ones(int(spec["width"]), np.float32) for spec, chain in found]
            out = concat.output[0] if k == len(ops) - 1 else base
            new_nodes.append(
                helper.make_node(
                    "Scaler", [current], [out], domain=ML_DOMAIN, name=f"{base}_node",
                    offset=[float(v) for v in np.concatenate(offsets_)], scale=[float(v) for v in np.concatenate(scales)],
                )
            )
            current = out
            continue
        parts = [chain[k][1] if chain else np.full(int(spec["width"]), IDENTITY[op]) for spec, chain in found]
        const = np.concatenate(parts).astype(np_dtype).reshape(1, -1)
        const_name, out = base + "_constant", (concat.output[0] if k == len(ops) - 1 else base)
        while const_name in taken:
            const_name = f"edgepack_{const_name}"
        while out in taken and out != concat.output[0]:
            out = f"edgepack_{out}"
        taken |= {const_name, out}
        new_inits.append(numpy_helper.from_array(const, name=const_name))
        new_nodes.append(helper.make_node(op, [current, const_name], [out], name=f"{base}_node"))
        current = out
    if not ops:
        # Bare inputs side by side: the fused input is the Concat's output.
        for node in graph.node:
            node.input[:] = [fused if x == concat.output[0] else x for x in node.input]
    _replace_node(graph, concat, new_nodes)
    graph.initializer.extend(new_inits)
    elem = next(i for i in graph.input if i.name == fused).type.tensor_type.elem_type
    inputs = [i for i in graph.input if i.name not in names]
    first = next(k for k, i in enumerate(graph.input) if i.name in names)
    inputs.insert(min(first, len(inputs)), helper.make_tensor_value_info(fused, elem, [None, offset]))
    del graph.input[:]
    graph.input.extend(inputs)
    _prune(onx)
    new_slots = {col: Slot(fused, offsets[s.onnx_input] + s.slot, s.dtype) if s.onnx_input in offsets else s for col, s in slots.items()}
    new_inputs = []
    for spec in onnx_inputs:
        if spec["name"] == fused:
            new_inputs.append({"name": fused, "dtype": dtype, "width": offset})
        elif spec["name"] not in offsets:
            new_inputs.append(spec)
    return new_slots, new_inputs
