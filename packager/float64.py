"""The float64 attempt: constants the original computes with in float64 go into the graph in float64.

skl2onnx stores some fitted values as float attributes even in a double graph: tree thresholds
(``nodes_values``) and imputed values (``imputed_value_floats``, which ``convert`` turns into a
double ``Where(IsNaN(x), values, x)`` constant, still rounded to float32). Rounded, a median
imputed in front of a HistGradientBoosting model moves across the split threshold it often
sits on (HGB's bin thresholds are midpoints between quantiles, the median among them), and the
ONNX model routes every imputed row differently from scikit-learn. Here each such constant is
matched to the fitted estimator it came from (every value must be that estimator's value
rounded to float32) and replaced by the estimator's own float64 values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .trees import ML_DOMAIN, TREE_OPS, FLOAT64_TREES


def exact_float64(onx: Any, model: Any) -> None:
    """Float64 tree thresholds and imputed values in a double graph (see the module docstring)."""
    exact_imputed_values(onx, model)
    float64_thresholds(onx, model)


def _numeric_statistics(model: Any) -> list[Any]:
    """The ``statistics_`` of every numeric SimpleImputer inside ``model``."""
    import numpy as np
    from sklearn.impute import SimpleImputer

    found, stack, seen = [], [model], set()
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, str) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, SimpleImputer):
            stats = getattr(obj, "statistics_", None)
            if stats is not None and stats.dtype.kind == "f":
                found.append(np.asarray(stats, dtype=np.float64))
            continue
        for attr in ("steps", "transformers_"):
            for item in getattr(obj, attr, None) or []:
                stack.append(item[1])
    return found


def exact_imputed_values(onx: Any, model: Any) -> int:
    """Replace float32-rounded ``Where(IsNaN(x), values, x)`` constants by the imputer's float64
    statistics (dropping NaN statistics, as the converter drops their columns). Returns how many."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    candidates = []
    for stats in _numeric_statistics(model):
        kept = stats[~np.isnan(stats)]
        candidates.append(kept)
    if not candidates:
        return 0
    isnan_outputs = {n.output[0] for n in onx.graph.node if n.op_type == "IsNaN" and n.domain in ("", "ai.onnx")}
    constants = {n.input[1] for n in onx.graph.node if n.op_type == "Where" and n.input[0] in isnan_outputs}
    replaced = 0
    for i, init in enumerate(onx.graph.initializer):
        if init.name not in constants or init.data_type != TensorProto.DOUBLE:
            continue
        values = numpy_helper.to_array(init)
        for exact in candidates:
            if exact.shape == values.reshape(-1).shape and np.array_equal(exact.astype(np.float32), values.reshape(-1).astype(np.float32)):
                onx.graph.initializer[i].CopyFrom(numpy_helper.from_array(exact.reshape(values.shape), name=init.name))
                replaced += 1
                break
    return replaced


# -- double-precision thresholds ------------------------------------------------------------------


@dataclass(frozen=True)
class _Exact:
    """The float64 values of one fitted estimator, keyed by (ONNX tree id, node id)."""

    thresholds: dict[tuple[int, int], float]
    """Every split node's threshold."""
    weights: dict[tuple[int, int], float] | None = None
    """Every leaf's value, where the converter writes it unscaled (None: keep the written ones)."""


def _hgb_thresholds(est: Any) -> _Exact:
    """(ONNX tree id, node id) -> float64 threshold, as skl2onnx numbers HGB trees."""
    per_iteration = len(est._predictors[0]) if est._predictors else 1
    table: dict[tuple[int, int], float] = {}
    for i, predictors in enumerate(est._predictors):
        for k, predictor in enumerate(predictors):
            tree_id = i * per_iteration + k if per_iteration > 1 else i
            for node_id, node in enumerate(predictor.nodes):
                if not node["is_leaf"]:
                    table[(tree_id, node_id)] = float(node["num_threshold"])
    return _Exact(table)


def _lightgbm_values(est: Any) -> _Exact | None:
    """Thresholds and leaf values of a LightGBM model, numbered as onnxmltools numbers them.

    onnxmltools' ``convert_lightgbm`` reads ``booster.dump_model()`` (after unfolding ``==``
    splits on category sets with its ``modify_tree_for_rule_in_set``), gives tree ``i`` of the
    dump tree id ``i``, the root node id 0, and, walking each tree depth first (left subtree
    before right), gives both children of a split the next free ids when the split is visited;
    a child dict met again keeps its id. Leaf values are written unscaled (learning rate 1.0).
    None when a threshold is not a number (the node is then left as written).
    """
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import modify_tree_for_rule_in_set

    dump = est.booster_.dump_model()
    modify_tree_for_rule_in_set(dump, use_float=True)
    thresholds: dict[tuple[int, int], float] = {}
    weights: dict[tuple[int, int], float] = {}
    for tree_id, tree in enumerate(dump.get("tree_info", [])):
        root = tree["tree_structure"]
        ids = {id(root): 0}
        stack = [root]
        while stack:
            node = stack.pop()
            node_id = ids[id(node)]
            if "left_child" not in node or "right_child" not in node:
                weights[(tree_id, node_id)] = float(node["leaf_value"])
                continue
            try:
                thresholds[(tree_id, node_id)] = float(node["threshold"])
            except (TypeError, ValueError):
                return None
            fresh = []
            for child in (node["left_child"], node["right_child"]):
                if id(child) not in ids:
                    ids[id(child)] = len(ids)  # ids only grow: the smallest free one is the count
                    fresh.append(child)
            stack.extend(reversed(fresh))  # the left subtree first
    return _Exact(thresholds, weights)


def _exact_values(est: Any) -> _Exact | None:
    if type(est).__name__.startswith("LGBM"):
        return _lightgbm_values(est)
    return _hgb_thresholds(est)


def _float64_estimators(model: Any) -> Iterator[Any]:
    """Every fitted estimator inside ``model`` whose trees compare in float64."""
    import numpy as np

    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, str):
            continue
        seen.add(id(obj))
        if type(obj).__name__ in FLOAT64_TREES:
            yield obj
            continue
        for attr in ("steps", "transformers_", "estimators_", "estimator_", "final_estimator_", "named_estimators_", "regressor_"):
            value = getattr(obj, attr, None)
            if value is None:
                continue
            if isinstance(value, dict):
                value = list(value.values())
            if isinstance(value, (list, tuple, np.ndarray)):
                for item in np.asarray(value, dtype=object).ravel().tolist():
                    stack.extend(item if isinstance(item, tuple) else (item,))
            else:
                stack.append(value)


def float64_thresholds(onx: Any, model: Any) -> int:
    """Give the tree nodes of float64-comparing estimators their exact float64 thresholds.

    Each ``TreeEnsemble*`` node is matched to an estimator by its (tree id, node id) layout and
    by every written threshold being the float32 rounding of the estimator's; a node that matches
    none stays as it is (the parity gate then judges it). Leaf values become double too: the
    estimator's own where it has them (LightGBM's, onnxruntime then sums the trees in double, as
    LightGBM does), else the written ones. The node's score output, float in ONNX's definition,
    is cast to the double the rest of the graph expects. Returns how many nodes were rewritten.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    tables = [table for table in map(_exact_values, _float64_estimators(model)) if table is not None]
    if not tables:
        return 0
    rewritten = 0
    nodes = []
    taken = {o for n in onx.graph.node for o in n.output}
    for node in onx.graph.node:
        nodes.append(node)
        if node.domain != ML_DOMAIN or node.op_type not in TREE_OPS:
            continue
        attrs = {a.name: a for a in node.attribute}
        if "nodes_values" not in attrs:
            continue
        keys = list(zip(helper.get_attribute_value(attrs["nodes_treeids"]), helper.get_attribute_value(attrs["nodes_nodeids"])))
        written = np.asarray(helper.get_attribute_value(attrs["nodes_values"]), dtype=np.float32)
        modes = helper.get_attribute_value(attrs["nodes_modes"])
        splits = [(i, key) for i, (key, mode) in enumerate(zip(keys, modes)) if mode != b"LEAF"]
        for exact_values in tables:
            table = exact_values.thresholds
            if len(splits) != len(table) or any(key not in table or np.float32(table[key]) != written[i] for i, key in splits):
                continue
            exact = written.astype(np.float64)
            for i, key in splits:
                exact[i] = table[key]
            replaced = [a for a in node.attribute if a.name not in ("nodes_values", "base_values", "target_weights", "class_weights")]
            extra = [helper.make_attribute("nodes_values_as_tensor", numpy_helper.from_array(exact))]
            for name in ("base_values", "target_weights", "class_weights"):
                if name in attrs:
                    values = _leaf_values(attrs, name, exact_values.weights) if name != "base_values" else None
                    if values is None:
                        values = np.asarray(helper.get_attribute_value(attrs[name]), dtype=np.float64)
                    extra.append(helper.make_attribute(f"{name}_as_tensor", numpy_helper.from_array(values)))
            del node.attribute[:]
            node.attribute.extend(replaced + extra)
            score = 1 if node.op_type == "TreeEnsembleClassifier" else 0
            original = node.output[score]
            inner = f"{original}_edgepack_float"
            while inner in taken:
                inner = f"edgepack_{inner}"
            taken.add(inner)
            node.output[score] = inner
            nodes.append(helper.make_node("Cast", [inner], [original], to=TensorProto.DOUBLE, name=f"{inner}_cast"))
            rewritten += 1
            break
    if rewritten:
        del onx.graph.node[:]
        onx.graph.node.extend(nodes)
        for imp in onx.opset_import:
            if imp.domain == ML_DOMAIN and imp.version < 3:
                imp.version = 3  # the *_as_tensor attributes arrived in ai.onnx.ml 3
    return rewritten


def _leaf_values(attrs: dict[str, Any], name: str, weights: dict[tuple[int, int], float] | None) -> Any:
    """The estimator's own leaf values in the order of ``name`` (``class_weights`` or
    ``target_weights``), or None when they do not match what was written, leaf for leaf."""
    import numpy as np
    from onnx import helper

    prefix = name.split("_")[0]
    if weights is None or f"{prefix}_treeids" not in attrs or f"{prefix}_nodeids" not in attrs:
        return None
    keys = list(zip(helper.get_attribute_value(attrs[f"{prefix}_treeids"]), helper.get_attribute_value(attrs[f"{prefix}_nodeids"])))
    written = np.asarray(helper.get_attribute_value(attrs[name]), dtype=np.float32)
    if len(keys) != len(written) or any(key not in weights or np.float32(weights[key]) != w for key, w in zip(keys, written)):
        return None
    return np.asarray([weights[key] for key in keys], dtype=np.float64)
