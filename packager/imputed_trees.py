"""Move a numeric imputer in front of tree ensembles into the trees' missing-value routing.

``Where(IsNaN(x), values, x)`` (edgepack's double-precision imputer) or ``ai.onnx.ml.Imputer``
costs two nodes, or one, per single-row run. When everything between the imputer and the trees
is per-column arithmetic with constants (a scaler's ``Sub``/``Div`` or ``Scaler``, ``Cast``, the
ColumnTransformer's ``Concat``), a missing value reaches the trees as NaN once the imputer is
gone, and each split can send NaN where the imputed value would have gone:
``nodes_missing_value_tracks_true`` is set to the split's verdict on the value the old graph
fed the trees for an imputed cell. onnxruntime computes that value here, by running the graph
as it is on a row of missing values, so the verdict is the shipped graph's own; the parity
gate's missing-value proofs then compare the result with the original.

Splits on other columns keep their flags. Only ``BRANCH_LEQ``/``LT``/``GTE``/``GT`` splits are
rewritten (for them onnxruntime sends NaN to the true branch exactly when the flag is set);
anything else between the imputer and the trees, or a reader of the imputed values that is not
a tree ensemble, leaves the graph as it is.
"""

from __future__ import annotations

from typing import Any

from .simplify import _attrs

ML_DOMAIN = "ai.onnx.ml"
DEFAULT_DOMAINS = ("", "ai.onnx")
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
ARITHMETIC = ("Sub", "Div", "Add", "Mul")
ROUTES = {b"BRANCH_LEQ": "le", b"BRANCH_LT": "lt", b"BRANCH_GTE": "ge", b"BRANCH_GT": "gt"}


def _per_column(value: Any) -> bool:
    """A constant that broadcasts column by column over an (N, W) tensor: a scalar, (W,) or (1, W)."""
    return value.ndim == 0 or value.ndim == 1 or (value.ndim == 2 and value.shape[0] == 1)


class _Flow:
    """Tensors downstream of one imputer, each with the imputed column every one of its columns
    holds (None: a column that does not come from the imputer)."""

    def __init__(self, onx: Any, constants: dict[str, Any]) -> None:
        from onnx import shape_inference

        self.graph = onx.graph
        self.constants = constants
        self.outputs = {o.name for o in self.graph.output}
        # Widths of the tensors a Concat joins to the imputed ones (skl2onnx records few shapes).
        try:
            inferred = shape_inference.infer_shapes(onx).graph
        except Exception:  # noqa: BLE001 - without shapes, a Concat with other parts is not followed
            inferred = self.graph
        self.widths: dict[str, int] = {}
        for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                self.widths[vi.name] = int(dims[1].dim_value)

    def trees(self, start: str, width: int) -> list[tuple[Any, list[int | None]]] | None:
        """Every tree node the imputed tensor reaches and its input's column map; None when a
        reader on the way is not per-column arithmetic, column routing or a tree ensemble."""
        if start in self.outputs:
            return None
        columns: dict[str, list[int | None]] = {start: list(range(width))}
        found = []
        for node in self.graph.node:  # in topological order: a Concat sees all its parts mapped
            if not any(x in columns for x in node.input):
                continue
            kind, attrs = node.op_type, _attrs(node)
            if node.domain == ML_DOMAIN and kind in TREE_OPS and node.input[0] in columns:
                found.append((node, columns[node.input[0]]))
                continue
            first = node.input[0]
            if node.domain == ML_DOMAIN and kind == "Scaler" and first in columns:
                mapped = columns[first]  # (x - offset) * scale, per column: NaN stays NaN
            elif node.domain not in DEFAULT_DOMAINS:
                return None
            elif kind == "Identity" or (kind == "Cast" and attrs.get("to") in (1, 11)):  # float, double
                mapped = columns[first]
            elif kind in ARITHMETIC and len(node.input) == 2 and first in columns and node.input[1] not in columns:
                other = self.constants.get(node.input[1])
                if other is None or not _per_column(other):
                    return None
                mapped = columns[first]
            elif kind in ("Add", "Mul") and len(node.input) == 2 and node.input[1] in columns and first not in columns:
                other = self.constants.get(first)
                if other is None or not _per_column(other):
                    return None
                mapped = columns[node.input[1]]
            elif kind == "Concat" and attrs.get("axis") in (1, -1):
                parts: list[list[int | None]] = []
                for x in node.input:
                    if x in columns:
                        parts.append(columns[x])
                        continue
                    w = self._width(x)
                    if w is None:
                        return None
                    parts.append([None] * w)
                mapped = [c for part in parts for c in part]
            elif kind == "Gather" and attrs.get("axis") in (1, -1) and first in columns and node.input[1] not in columns:
                picked = self.constants.get(node.input[1])
                if picked is None or picked.ndim != 1:
                    return None
                mapped = [columns[first][int(i)] for i in picked.tolist()]
            else:
                return None
            if any(o in self.outputs for o in node.output):
                return None
            columns[node.output[0]] = mapped
        return found or None

    def _width(self, name: str) -> int | None:
        return self.widths.get(name)


def _imputers(graph: Any, constants: dict[str, Any]) -> list[tuple[Any, list[Any], str, str, int]]:
    """(node(s) to remove, their output, their input, width) for each numeric imputer."""
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type == "Where" and node.domain in DEFAULT_DOMAINS and len(node.input) == 3:
            mask = producer.get(node.input[0])
            values = constants.get(node.input[1])
            if mask is None or mask.op_type != "IsNaN" or mask.input[0] != node.input[2] or values is None or values.ndim != 1:
                continue
            found.append((node, [node], node.output[0], node.input[2], int(values.shape[0])))
        elif node.op_type == "Imputer" and node.domain == ML_DOMAIN:
            attrs = _attrs(node)
            values = attrs.get("imputed_value_floats")
            replaced = attrs.get("replaced_value_float", 0.0)
            if not values or replaced == replaced or len(values) < 2:  # NaN only; one value broadcasts to an unknown width
                continue
            found.append((node, [node], node.output[0], node.input[0], len(values)))
    return found


def _verdicts(onx: Any, tensors: list[str]) -> dict[str, Any] | None:
    """The values ``tensors`` take when every numeric graph input is missing (NaN), as
    onnxruntime computes them in this graph."""
    import copy

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = copy.deepcopy(onx)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    feeds = {}
    for vi in probe.graph.input:
        if vi.name in {t.name for t in probe.graph.initializer}:
            continue
        dims = vi.type.tensor_type.shape.dim
        width = int(dims[1].dim_value) if len(dims) == 2 and dims[1].HasField("dim_value") else None
        if width is None:
            return None
        elem = vi.type.tensor_type.elem_type
        if elem == TensorProto.FLOAT:
            feeds[vi.name] = np.full((1, width), np.nan, dtype=np.float32)
        elif elem == TensorProto.DOUBLE:
            feeds[vi.name] = np.full((1, width), np.nan, dtype=np.float64)
        elif elem == TensorProto.STRING:
            feeds[vi.name] = np.full((1, width), "", dtype=object)
        else:
            return None  # an int64 input cannot be missing; what feeds the trees then is unknown
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(tensors, feeds)
    except Exception:  # noqa: BLE001 - a graph onnxruntime cannot probe stays as it is
        return None
    return dict(zip(tensors, values))


def _route(mode: str, value: float, threshold: float) -> bool:
    return {"le": value <= threshold, "lt": value < threshold, "ge": value >= threshold, "gt": value > threshold}[mode]


def impute_into_trees(onx: Any) -> int:
    """Rewrite as the module docstring says; returns how many imputers were removed."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = onx.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    flow = _Flow(onx, constants)
    plans = []
    for node, _, out, source, width in _imputers(graph, constants):
        reached = flow.trees(out, width)
        if reached is None:
            continue
        plans.append((node, out, source, width, reached))
    if not plans:
        return 0
    wanted = sorted({tree.input[0] for *_, reached in plans for tree, _ in reached} | {src for _, _, src, _, _ in plans})
    values = _verdicts(onx, wanted)
    if values is None:
        return 0
    removed = 0
    rewritten: dict[str, list[int]] = {}
    for node, out, source, width, reached in plans:
        # The imputer's own input must be all NaN on the probe row, so that its output is the
        # imputed values (an input that maps NaN to a number first is not what we think it is).
        if not np.isnan(np.asarray(values[source], dtype=np.float64)).all():
            continue
        changes = []
        for tree, columns in reached:
            attrs = _attrs(tree)
            if "nodes_values_as_tensor" in attrs:
                thresholds = numpy_helper.to_array(attrs["nodes_values_as_tensor"]).astype(np.float64).reshape(-1).tolist()
            else:
                thresholds = [float(v) for v in attrs.get("nodes_values", [])]
            features, modes = list(attrs["nodes_featureids"]), list(attrs["nodes_modes"])
            flags = rewritten.get(tree.output[0]) or [int(v) for v in attrs.get("nodes_missing_value_tracks_true", [0] * len(modes))]
            fed = np.asarray(values[tree.input[0]], dtype=np.float64).reshape(-1)
            ok = True
            for i, (feature, mode) in enumerate(zip(features, modes)):
                if mode == b"LEAF" or not 0 <= feature < len(columns) or columns[feature] is None:
                    continue
                route = ROUTES.get(mode)
                value = float(fed[feature])
                if route is None or value != value:  # another mode, or NaN where a number was imputed
                    ok = False
                    break
                flags[i] = int(_route(route, value, thresholds[i]))
            if not ok:
                break
            changes.append((tree, flags))
        else:
            for tree, flags in changes:
                rewritten[tree.output[0]] = flags
            # Readers of the imputed tensor now read the raw one; the imputer is pruned.
            for reader in graph.node:
                for k, x in enumerate(reader.input):
                    if x == out:
                        reader.input[k] = source
            removed += 1
    for tree in graph.node:
        if tree.output and tree.output[0] in rewritten:
            kept = [a for a in tree.attribute if a.name != "nodes_missing_value_tracks_true"]
            del tree.attribute[:]
            tree.attribute.extend(kept + [helper.make_attribute("nodes_missing_value_tracks_true", rewritten[tree.output[0]])])
    return removed
