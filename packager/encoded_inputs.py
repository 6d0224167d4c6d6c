"""Cut a packed graph where its one-hot floats come out, and let the runtime feed them.

After packager/simplify.py, a ColumnTransformer's one-hot encoding of string columns is one
chain over the packed string input: ``LabelEncoder`` (a code per known string, a default
for any other), ``Gather`` of the code each one-hot column reads, ``Equal`` with the code it
stands for, ``Cast`` to float (one string column keeps skl2onnx's own chain: ``Gather`` of
the column, ``OneHotEncoder``, ``Reshape``, maybe ``Cast``; both are cut the same way). On a single row that chain, and the string tensor it reads,
cost about a third of the shipped graph's run in onnxruntime (measured on the benchmark
forest: 16 µs with it, 11 µs fed the floats); a string input also keeps the runtime off its
one-row IOBinding path.

The runtime validates every string anyway and knows what each one-hot column stands for, so
this rewrite removes the chain and the string input, adds one float input that carries the
one-hot columns as the chain made them, and declares each string feature's slots there as
``"encoding": {"kind": "one_hot", "categories": [...]}`` (runtime/encodings.py). What the
graph computes from the floats on is untouched, and a string the chain did not know (or a
missing value's sentinel) gives all zeros exactly as the chain did. The chain is cut only
when it is exactly this (each node read by the next alone, constant reads and codes, one
string per code, a default that is no column's code, each column's slots side by side);
anything else ships as it is. The parity gate then runs the graph as cut, fed the way the
device feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .packing import Slot
from .simplify import DEFAULT_DOMAINS, ML_DOMAIN, _attrs

ONE_HOT_INPUT = "onehot_input"


@dataclass
class Cut:
    """What ``cut_one_hot`` changed."""

    slots: dict[str, Slot]
    """Where each original column travels now."""
    onnx_inputs: list[dict[str, Any]]
    """The manifest's ``onnx_inputs`` now."""
    encodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Column -> its manifest ``encoding``, for the columns the runtime now encodes."""


def _codes(encoder: Any) -> tuple[dict[int, str], int] | None:
    """A ``LabelEncoder``'s code -> string (one string per code) and its default code."""
    a = _attrs(encoder)
    if "classes_strings" in a:  # LabelEncoder-1: a string's code is its index
        keys = [k.decode() for k in a["classes_strings"]]
        values = list(range(len(keys)))
    elif "keys_strings" in a and "values_int64s" in a:
        keys = [k.decode() for k in a["keys_strings"]]
        values = [int(v) for v in a["values_int64s"]]
    else:
        return None
    default = int(a.get("default_int64", -1))
    if len(set(values)) != len(values) or len(keys) != len(values) or default in values:
        return None
    return dict(zip(values, keys)), default


Found = tuple[list[Any], str, int, dict[int, tuple[int, list[str]]]]
"""(the chain's nodes, its output, that output's element type, string slot -> (first
one-hot column, the string each of its columns stands for))."""


def _label_chain(source: str, only: Any, constants: dict[str, Any]) -> Found | None:
    """packager/simplify.py's chain: LabelEncoder, Gather, Equal, Cast."""
    from onnx import TensorProto

    encoder = only(source, "LabelEncoder", (ML_DOMAIN,))
    gather = encoder and only(encoder.output[0], "Gather", DEFAULT_DOMAINS)
    if gather is None or gather.input[0] != encoder.output[0] or _attrs(gather).get("axis") not in (1, -1):
        return None
    equal = only(gather.output[0], "Equal", DEFAULT_DOMAINS)
    cast = equal and only(equal.output[0], "Cast", DEFAULT_DOMAINS)
    if cast is None or equal.input[0] != gather.output[0] or int(_attrs(cast)["to"]) not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        return None
    reads, wants, coded = constants.get(gather.input[1]), constants.get(equal.input[1]), _codes(encoder)
    if reads is None or wants is None or coded is None or reads.ndim != 1 or wants.shape != reads.shape:
        return None
    strings_of, _default = coded
    reads_, wants_ = [int(r) for r in reads], [int(w) for w in wants]
    if any(w not in strings_of for w in wants_):
        return None  # a column no string turns on (or the default turns on): keep the chain
    columns: dict[int, tuple[int, list[str]]] = {}
    for j, r in enumerate(reads_):
        if r not in columns:
            count = reads_.count(r)
            if reads_[j : j + count] != [r] * count:
                return None  # its columns are not side by side
            columns[r] = (j, [strings_of[w] for w in wants_[j : j + count]])
    return [encoder, gather, equal, cast], cast.output[0], int(_attrs(cast)["to"]), columns


def _encoder_chain(source: str, only: Any, consumers: dict[str, list[Any]], constants: dict[str, Any]) -> Found | None:
    """skl2onnx's chain for one string column (which simplify.py leaves alone): Identity,
    Gather of column 0, OneHotEncoder (unknown strings as zeros), Reshape to (N, C), maybe Cast."""
    from onnx import TensorProto

    nodes, name = [], source
    while True:
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type not in ("Identity", "Gather") or found[0].domain not in DEFAULT_DOMAINS:
            break
        node = found[0]
        if node.op_type == "Gather":
            index = constants.get(node.input[1]) if len(node.input) > 1 else None
            if node.input[0] != name or _attrs(node).get("axis") not in (1, -1) or index is None or index.reshape(-1).tolist() != [0] or index.ndim != 1:
                return None
        nodes.append(node)
        name = node.output[0]
    encoder = only(name, "OneHotEncoder", (ML_DOMAIN,))
    if encoder is None:
        return None
    attrs = _attrs(encoder)
    if "cats_strings" not in attrs or int(attrs.get("zeros", 1)) != 1:
        return None  # zeros=0 is handle_unknown="error": onnxruntime refuses an unknown string, keep that
    categories = [c.decode() for c in attrs["cats_strings"]]
    reshape = only(encoder.output[0], "Reshape", DEFAULT_DOMAINS)
    shape = constants.get(reshape.input[1]) if reshape is not None and len(reshape.input) > 1 else None
    if shape is None or len(set(categories)) != len(categories) or shape.reshape(-1).tolist() not in ([-1, len(categories)], [0, len(categories)]):
        return None
    nodes += [encoder, reshape]
    out, to = reshape.output[0], TensorProto.FLOAT  # OneHotEncoder's output type
    cast = only(out, "Cast", DEFAULT_DOMAINS)
    if cast is not None and int(_attrs(cast)["to"]) in (TensorProto.FLOAT, TensorProto.DOUBLE):
        nodes.append(cast)
        out, to = cast.output[0], int(_attrs(cast)["to"])
    return nodes, out, to, {0: (0, categories)}


def cut_one_hot(onx: Any, slots: dict[str, Slot], onnx_inputs: list[dict[str, Any]]) -> Cut | None:
    """Apply the rewrite of the module docstring to ``onx`` in place; None when it does not apply."""
    from onnx import TensorProto, helper, numpy_helper

    strings = [spec for spec in onnx_inputs if spec["dtype"] == "string"]
    if len(strings) != 1:
        return None
    source = strings[0]["name"]
    graph = onx.graph
    if any(a.HasField("g") or len(a.graphs) for n in graph.node for a in n.attribute):
        return None  # a subgraph may read any outer name
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def only(name: str, op: str, domains: tuple[str, ...]) -> Any | None:
        found = consumers.get(name, [])
        if len(found) != 1 or name in outputs or found[0].op_type != op or found[0].domain not in domains:
            return None
        return found[0]

    width = int(strings[0]["width"])
    found = _label_chain(source, only, constants) or (_encoder_chain(source, only, consumers, constants) if width == 1 else None)
    if found is None:
        return None
    chain, out, to, columns = found
    if out in outputs:
        return None
    string_columns = {col: slot for col, slot in slots.items() if slot.onnx_input == source}
    # Every string column is read by the chain (else it must keep its input), and nothing else.
    if sorted(columns) != list(range(width)) or sorted(s.slot for s in string_columns.values()) != list(range(width)):
        return None
    total = sum(len(cats) for _, cats in columns.values())

    taken = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    name = ONE_HOT_INPUT
    while name in taken:
        name = f"edgepack_{name}"
    for node in consumers.get(out, []):
        node.input[:] = [name if x == out else x for x in node.input]
    # By output names: protobuf may hand out a new wrapper object for the same node.
    gone = {tuple(m.output) for m in chain}
    keep = [n for n in graph.node if tuple(n.output) not in gone]
    del graph.node[:]
    graph.node.extend(keep)
    inputs = [i for i in graph.input if i.name != source]
    del graph.input[:]
    graph.input.extend(inputs)
    graph.input.append(helper.make_tensor_value_info(name, to, [None, total]))
    from .simplify import _prune

    _prune(onx)

    dtype = "float32" if to == TensorProto.FLOAT else "float64"
    new_slots = dict(slots)
    encodings: dict[str, dict[str, Any]] = {}
    for col, slot in string_columns.items():
        first, categories = columns[slot.slot]
        new_slots[col] = Slot(name, first, "string")
        encodings[col] = {"kind": "one_hot", "categories": categories}
    new_inputs = [{"name": name, "dtype": dtype, "width": total} if spec["name"] == source else spec for spec in onnx_inputs]
    return Cut(slots=new_slots, onnx_inputs=new_inputs, encodings=encodings)


def encode_inputs(onx: Any, slots: dict[str, Slot], onnx_inputs: list[dict[str, Any]]) -> tuple[dict[str, Slot], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``cut_one_hot`` where it applies: (slots, onnx_inputs, encodings), unchanged otherwise."""
    cut = cut_one_hot(onx, slots, onnx_inputs)
    if cut is None:
        return slots, onnx_inputs, {}
    from .fused_inputs import fuse_inputs  # the one-hot floats join the numbers in one input

    fused_slots, fused_inputs = fuse_inputs(onx, cut.slots, cut.onnx_inputs)
    return fused_slots, fused_inputs, cut.encodings
