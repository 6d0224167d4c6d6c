"""Rewrite a converted, packed graph into one with fewer nodes that computes the same values.

onnxruntime spends about a microsecond dispatching each node of a single-row run, so a
ColumnTransformer's graph costs more in node count than in arithmetic. Measured on the
benchmark forest (25 numeric columns behind an imputer and a scaler, 6 one-hot string columns,
100 trees): the converted graph has 19 nodes and runs in ~32 µs, the trees alone in ~12 µs.
Two patterns make most of the difference, and both are rewritten here into nodes that give
bit-identical outputs (the parity gate still judges the graph as shipped):

- ``Split`` of a packed input followed by a ``Concat`` of its pieces (edgepack's packing
  meeting skl2onnx's column selection) is the packed input itself, or one ``Gather`` of its
  columns (~9 µs on the forest);
- one ``OneHotEncoder`` per string column, their ``Concat``, a ``Reshape`` and a ``Cast`` become
  one ``LabelEncoder`` over the packed string input (a code per distinct string, -1 for an
  unknown one), one ``Gather`` of the code each one-hot column reads, one ``Equal`` with the
  code it stands for and one ``Cast`` (~4 µs). An unknown string matches no code, so its
  one-hot columns are all zero, as ``OneHotEncoder(zeros=1)`` (``handle_unknown="ignore"``)
  gives; an encoder with ``zeros=0`` (``handle_unknown="error"``), whose onnxruntime kernel
  refuses an unknown string, is left as it is, so that the bundle keeps refusing it.

Nodes and initializers that nothing reads any more are removed afterwards. Names of new
tensors are derived from the ones they replace, so the same model always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ML_DOMAIN = "ai.onnx.ml"
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Rewrites:
    """What ``simplify`` changed, for the build report and the tests."""

    split_concat: int = 0
    """``Split`` + ``Concat`` pairs replaced by the packed input or a ``Gather``."""
    one_hot: int = 0
    """Chains of string ``OneHotEncoder`` nodes replaced by ``LabelEncoder`` + ``Gather`` + ``Equal``."""
    imputers: int = 0
    """Numeric imputers in front of tree ensembles moved into the trees' missing-value routing."""
    removed: list[str] = field(default_factory=list)
    """Op types of the nodes removed, in graph order."""


class _Graph:
    """Producer and consumer tables over a ``GraphProto``, rebuilt after each rewrite."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer: dict[str, tuple[Any, int]] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for k, name in enumerate(node.output):
                self.producer[name] = (node, k)
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = {i.name: i for i in graph.input}
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.names = set(self.producer) | set(self.inputs) | set(self.constants) | {n.name for n in graph.node}

    def fresh(self, base: str) -> str:
        name = base
        while name in self.names:
            name = f"edgepack_{name}"
        self.names.add(name)
        return name

    def only_consumer(self, name: str) -> Any | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and name not in self.outputs else None


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rank2_width(vi: Any) -> int | None:
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    return int(dims[1].dim_value)


def _split_pieces(g: _Graph, split: Any) -> tuple[str, list[tuple[int, int]]] | None:
    """(packed input, [(offset, width)] per output) for a ``Split`` along axis 1 of a 2-D graph input."""
    if split.op_type != "Split" or split.domain not in DEFAULT_DOMAINS or split.input[0] not in g.inputs:
        return None
    if _attrs(split).get("axis", 0) not in (1, -1):
        return None
    width = _rank2_width(g.inputs[split.input[0]])
    if width is None:
        return None
    sizes: Any = _attrs(split).get("split")
    if len(split.input) > 1 and split.input[1]:
        sizes = g.constants.get(split.input[1])
        if sizes is None:
            return None
        sizes = [int(s) for s in sizes.reshape(-1)]
    if sizes is None or len(sizes) != len(split.output) or sum(sizes) != width:
        return None
    pieces, offset = [], 0
    for size in sizes:
        pieces.append((offset, int(size)))
        offset += int(size)
    return split.input[0], pieces


def _replace_node(graph: Any, old: Any, new: Iterable[Any]) -> None:
    # By output name, which is unique in a valid graph: protobuf may hand out a new wrapper
    # object for the same node on each iteration, so identity says nothing.
    nodes = []
    for node in graph.node:
        if list(node.output) == list(old.output):
            nodes.extend(new)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _rename_input(g: _Graph, name: str, to: str) -> None:
    for node in g.consumers.get(name, []):
        for k, x in enumerate(node.input):
            if x == name:
                node.input[k] = to


def _split_concat_once(onx: Any) -> bool:
    import numpy as np
    from onnx import helper, numpy_helper

    g = _Graph(onx.graph)
    for node in onx.graph.node:
        if node.op_type != "Concat" or node.domain not in DEFAULT_DOMAINS or _attrs(node).get("axis") not in (1, -1):
            continue
        sources = [g.producer.get(x) for x in node.input]
        if not sources or any(s is None for s in sources) or len({s[0].output[0] for s in sources}) != 1:  # type: ignore[index]
            continue
        split = sources[0][0]  # type: ignore[index]
        found = _split_pieces(g, split)
        if found is None:
            continue
        packed, pieces = found
        columns = [j for _, k in sources for j in range(pieces[k][0], pieces[k][0] + pieces[k][1])]  # type: ignore[misc]
        out = node.output[0]
        if columns == list(range(sum(w for _, w in pieces))) and out not in g.outputs:
            _rename_input(g, out, packed)
            _replace_node(onx.graph, node, [])
        else:
            indices = g.fresh(f"{out}_edgepack_columns")
            onx.graph.initializer.append(numpy_helper.from_array(np.asarray(columns, dtype=np.int64), name=indices))
            gather = helper.make_node("Gather", [packed, indices], [out], axis=1, name=g.fresh(f"{out}_edgepack_gather"))
            _replace_node(onx.graph, node, [gather])
        return True
    return False


def _ml_opset(onx: Any) -> int:
    return max((int(imp.version) for imp in onx.opset_import if imp.domain == ML_DOMAIN), default=0)


def _label_encoder(onx: Any, source: str, out: str, vocabulary: list[bytes], name: str) -> Any:
    """``source`` strings -> int64 index in ``vocabulary``, -1 for any other string."""
    from onnx import helper

    if _ml_opset(onx) >= 2:  # LabelEncoder-2 maps keys to values; -1 did not change meaning
        return helper.make_node(
            "LabelEncoder", [source], [out], domain=ML_DOMAIN, name=name,
            keys_strings=vocabulary, values_int64s=list(range(len(vocabulary))), default_int64=-1,
        )
    return helper.make_node("LabelEncoder", [source], [out], domain=ML_DOMAIN, name=name, classes_strings=vocabulary, default_int64=-1)


def _one_hot_once(onx: Any) -> bool:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(onx.graph)
    for concat in onx.graph.node:
        if concat.op_type != "Concat" or concat.domain not in DEFAULT_DOMAINS or _attrs(concat).get("axis") not in (2, -1):
            continue
        encoders = [g.producer.get(x) for x in concat.input]
        if not encoders or any(e is None or e[0].op_type != "OneHotEncoder" or e[0].domain != ML_DOMAIN for e in encoders):
            continue
        encoders_ = [e[0] for e in encoders]  # type: ignore[index]
        table = [_attrs(e) for e in encoders_]
        # zeros=0 is handle_unknown="error": onnxruntime refuses an unknown string, keep that.
        if any("cats_strings" not in t or int(t.get("zeros", 1)) != 1 for t in table):
            continue
        if any(getattr(g.only_consumer(e.output[0]), "output", None) != concat.output for e in encoders_):
            continue
        pieces = [g.producer.get(e.input[0]) for e in encoders_]
        if any(p is None for p in pieces) or len({p[0].output[0] for p in pieces}) != 1:  # type: ignore[index]
            continue
        found = _split_pieces(g, pieces[0][0])  # type: ignore[index]
        if found is None:
            continue
        packed, slots = found
        if any(slots[k][1] != 1 for _, k in pieces):  # type: ignore[misc]
            continue
        cats = [list(t["cats_strings"]) for t in table]
        total = sum(len(c) for c in cats)
        reshape = g.only_consumer(concat.output[0])
        if reshape is None or reshape.op_type != "Reshape" or len(reshape.input) < 2:
            continue
        shape = g.constants.get(reshape.input[1])
        if shape is None or [int(v) for v in shape.reshape(-1)] not in ([-1, total], [0, total]):
            continue
        cast = g.only_consumer(reshape.output[0])
        if cast is not None and cast.op_type == "Cast" and cast.domain in DEFAULT_DOMAINS:
            out, to, last = cast.output[0], int(_attrs(cast)["to"]), cast
        else:
            # The encoders' output type: float (OneHotEncoder's only output type).
            out, to, last = reshape.output[0], TensorProto.FLOAT, reshape
        vocabulary = sorted({c for group in cats for c in group})
        code = {c: i for i, c in enumerate(vocabulary)}
        reads = [slots[k][0] for (_, k), group in zip(pieces, cats) for _ in group]  # type: ignore[misc]
        wants = [code[c] for group in cats for c in group]
        codes, picked, equal = g.fresh(f"{out}_edgepack_codes"), g.fresh(f"{out}_edgepack_picked"), g.fresh(f"{out}_edgepack_equal")
        reads_name, wants_name = g.fresh(f"{out}_edgepack_reads"), g.fresh(f"{out}_edgepack_wants")
        onx.graph.initializer.extend(
            [
                numpy_helper.from_array(np.asarray(reads, dtype=np.int64), name=reads_name),
                numpy_helper.from_array(np.asarray(wants, dtype=np.int64), name=wants_name),
            ]
        )
        replacement = [
            _label_encoder(onx, packed, codes, vocabulary, g.fresh(f"{out}_edgepack_label_encoder")),
            helper.make_node("Gather", [codes, reads_name], [picked], axis=1, name=g.fresh(f"{out}_edgepack_gather")),
            helper.make_node("Equal", [picked, wants_name], [equal], name=g.fresh(f"{out}_edgepack_equal_node")),
            helper.make_node("Cast", [equal], [out], to=to, name=g.fresh(f"{out}_edgepack_cast")),
        ]
        # The new nodes take the place of the Reshape (the Cast, if any, follows it, and its
        # readers follow the Cast); the encoders and the Concat are then unread and pruned.
        if last.output[:] != reshape.output[:]:
            _replace_node(onx.graph, last, [])
        _replace_node(onx.graph, reshape, replacement)
        # LabelEncoder-1 has no shape inference: say what the chain gives, for later rewrites.
        stale = [vi for vi in onx.graph.value_info if vi.name == out]
        for vi in stale:
            onx.graph.value_info.remove(vi)
        onx.graph.value_info.append(helper.make_tensor_value_info(out, to, [None, total]))
        return True
    return False


def _prune(onx: Any) -> list[str]:
    """Remove nodes whose outputs nothing reads (and no graph output is), then unread initializers."""
    graph = onx.graph
    removed: list[str] = []
    while True:
        read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        live = [any(o in read for o in n.output if o) for n in graph.node]
        if all(live):
            break
        removed.extend(n.op_type for n, alive in zip(graph.node, live) if not alive)
        keep = [n for n, alive in zip(graph.node, live) if alive]
        del graph.node[:]
        graph.node.extend(keep)
    read = {x for n in graph.node for x in n.input}
    inits = [t for t in graph.initializer if t.name in read or t.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    # Shapes recorded for tensors that no node makes any more would only confuse a reader.
    made = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    infos = [vi for vi in graph.value_info if vi.name in made]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return removed


def simplify(onx: Any) -> Rewrites:
    """Apply the rewrites of the module docstring to ``onx`` in place, until none applies."""
    done = Rewrites()
    if any(a.HasField("g") or len(a.graphs) for n in onx.graph.node for a in n.attribute):
        return done  # a subgraph may read any outer name: renaming and pruning would need to follow it
    while _split_concat_once(onx):
        done.split_concat += 1
    while _one_hot_once(onx):
        done.one_hot += 1
    from .imputed_trees import impute_into_trees

    done.imputers = impute_into_trees(onx)
    if done.split_concat or done.one_hot or done.imputers:
        done.removed = _prune(onx)
    return done
