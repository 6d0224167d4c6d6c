"""sklearn -> ONNX with input types chosen per column, ZipMap off, inputs packed per dtype."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .converters import accepts_option, final_estimator, for_conversion
from .steps import walk_all
from .errors import ConversionError, ReferenceDataError
from .graph_edits import imputers_as_where, label_output_only, normalise
from .packing import Slot, pack

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Column:
    """One original input feature."""

    name: str
    """Column name as the model was trained with it."""
    kind: str
    """``numeric`` or ``categorical`` (strings)."""


@dataclass(frozen=True)
class Converted:
    """A packed ONNX model and how to feed it."""

    onnx: Any
    """``onnx.ModelProto``."""
    precision: str
    """``float32`` or ``float64``: the type of the numeric inputs."""
    slots: dict[str, Slot]
    """Where each original column travels."""
    onnx_inputs: list[dict[str, Any]]
    """The manifest's ``onnx_inputs``."""
    outputs: list[str]
    """Graph output names: ``[label, probabilities]`` or ``[prediction]``."""
    encodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Column -> the manifest ``encoding`` the runtime feeds it with (packager/encoded_inputs.py)."""


def columns_of(model: Any, signature: list[tuple[str, str]] | None, frame: Any) -> list[Column]:
    """The model's input columns in training order, each numeric or categorical.

    Names come from ``feature_names_in_`` (set when the model was fitted on a DataFrame),
    else the logged signature; kinds from the reference frame's dtypes. pandas 3 gives string
    columns the ``str`` dtype, so "numeric or not" is the only reliable test.
    """
    import pandas as pd

    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = _unsanitised([str(n) for n in names], signature, frame)
    elif signature:
        names = [n for n, _ in signature]
    elif frame is not None:
        names = [str(c) for c in frame.columns]
    else:
        raise ReferenceDataError(
            "cannot tell the model's input columns: it was not fitted on a DataFrame and was logged without "
            "a signature or input example; log it with input_example=X.head() or pass reference data"
        )
    sig_types = dict(signature or [])
    columns = []
    for name in names:
        # The logged signature wins: a CSV of zip codes reads as numbers, the model saw strings.
        if name in sig_types:
            numeric = sig_types[name] not in ("string", "str", "binary")
        elif frame is not None and name in frame.columns:
            series = frame[name]
            numeric = pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
        else:
            raise ReferenceDataError(f"column {name!r} is neither in the reference data nor in the logged signature")
        columns.append(Column(name, "numeric" if numeric else "categorical"))
    return columns


def _unsanitised(names: list[str], signature: list[tuple[str, str]] | None, frame: Any) -> list[str]:
    """The column names as the data has them, where the model keeps sanitised ones.

    LightGBM stores feature names with spaces and JSON punctuation replaced by ``_``
    (``"temp c"`` -> ``"temp_c"``) but predicts on the DataFrame by position; devices send
    the original names, which the logged signature and the reference data carry.
    """
    import re

    known = [n for n, _ in signature] if signature else ([str(c) for c in frame.columns] if frame is not None else [])
    if not known or set(names) <= set(known) or len(known) != len(names):
        return names
    plain = re.compile(r"[^0-9A-Za-z]")
    if all(plain.sub("_", a) == plain.sub("_", b) for a, b in zip(names, known)):
        return known
    return names


def takes_columns(model: Any) -> bool:
    """True when the model selects raw columns by name (a ColumnTransformer up front)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        steps = [s for _, s in model.steps if s is not None and s != "passthrough"]
        if not steps:
            return False
        model = steps[0]
    return isinstance(model, ColumnTransformer)


def _classifier_options(final: Any) -> dict[int, dict[str, Any]]:
    """``zipmap=False`` (an (N, C) tensor, no list of dicts) where the converter has the option.

    Some (LinearSVC's) have none, but skl2onnx's Pipeline parser adds ``zipmap`` to any
    classifier step without options and then refuses it ("Option 'zipmap' not in ['nocl',
    ...]"): give such a step one of its own options, at its default value.
    """
    if accepts_option(type(final), "zipmap"):
        return {id(final): {"zipmap": False}}
    for option in ("nocl", "raw_scores", "output_class_labels"):
        if accepts_option(type(final), option):
            return {id(final): {option: False}}
    # No declared options (GridSearchCV's): its parser still honours zipmap.
    return {id(final): {"zipmap": False}}


def label_only(model: Any) -> bool:
    """A classifier without ``predict_proba`` (LinearSVC, RidgeClassifier, hinge SGD, hard voting, ...)."""
    return not hasattr(model, "predict_proba")


def _failing_object(exc: BaseException) -> Any:
    """The sklearn object whose converter raised: skl2onnx's frames hold it as ``operator.raw_operator``."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        operator = tb.tb_frame.f_locals.get("operator")
        raw = getattr(operator, "raw_operator", None)
        if raw is not None:
            found = raw  # the innermost one wins
        tb = tb.tb_next
    return found


def conversion_error(
    model: Any, precision: str, exc: BaseException, *, converted: Any = None, failed: str = "could not be converted to ONNX"
) -> ConversionError:
    """The converter's failure, pinned to the step that failed.

    The step is the object skl2onnx was converting when it raised (found in the traceback),
    else the innermost step whose class the message names ("Unable to find a shape
    calculator for type '<class 'sklearn...SplineTransformer'>'").
    """
    reason = f"{type(exc).__name__}: {exc}".strip()
    where = None
    failing = _failing_object(exc)
    if failing is not None and converted is not None:
        # ``converted`` may be a copy of ``model`` (see for_conversion): same walk, same paths.
        paths = {id(step.obj): step.path for step in walk_all(converted)}
        path = paths.get(id(failing))
        if path is not None:
            where = next((step for step in walk_all(model) if step.path == path), None)
    for step in walk_all(model) if where is None else ():
        name = type(step.obj).__name__
        if name in reason and (where is None or len(step.path) >= len(where.path)):
            where = step
    if where is None:
        where = next(iter(walk_all(model)))
    cls = type(where.obj)
    at = f"step {where.path!r} " if where.path else "the model "
    return ConversionError(
        f"{at}({cls.__module__}.{cls.__name__}) {failed} ({precision} inputs): {reason}; "
        "this is a converter failure, not a parity failure: replace the step with one the converters handle "
        "(docs/models.md lists what builds), or fit it with other settings",
        step=where.path,
        cls=cls.__name__,
    )


def is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier as sk_is_classifier

    return bool(sk_is_classifier(model))


def convert(model: Any, columns: list[Column], precision: str, *, rewrite: bool = True, encode: bool = True) -> Converted:
    """Convert ``model`` with inputs typed per column, then pack them one input per dtype.

    ``rewrite=False`` leaves out packager/simplify.py's rewrites (the benchmark measures the
    graph without them beside the one shipped); ``encode=False`` keeps the string inputs."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = FloatTensorType if precision == "float32" else DoubleTensorType
    if takes_columns(model):
        initial = [(c.name, number([None, 1]) if c.kind == "numeric" else StringTensorType([None, 1])) for c in columns]
        per_input = [[c.name] for c in columns]
    else:
        kinds = {c.kind for c in columns}
        if len(kinds) > 1:
            mixed = ", ".join(f"{c.name} ({c.kind})" for c in columns)
            raise ConversionError(
                f"the model takes numeric and string columns without a ColumnTransformer in front ({mixed}); "
                "put a ColumnTransformer first so each column is routed by name"
            )
        kind = kinds.pop()
        initial = [("X", (number if kind == "numeric" else StringTensorType)([None, len(columns)]))]
        per_input = [[c.name for c in columns]]
    original = model
    model = for_conversion(model)
    final = final_estimator(model)
    options = _classifier_options(final) if is_classifier(model) else None
    if precision == "float64":
        model = _trees_in_float32(model)
    from .attributes import install  # booleans in int attributes: refused by protobuf 7

    install()
    try:
        onx = to_onnx(model, initial_types=initial, options=options, target_opset=TARGET_OPSET)
    except Exception as exc:  # skl2onnx raises bare RuntimeError/ValueError/TypeError/NotImplementedError
        raise conversion_error(original, precision, exc, converted=model) from exc
    if is_classifier(original) and label_only(original):
        label_output_only(onx)
    if len(onx.graph.input) != len(per_input):
        # skl2onnx drops inputs that nothing reads; map the survivors back by their sanitised names.
        raise ConversionError(
            f"converted graph has {len(onx.graph.input)} inputs for {len(per_input)} columns; "
            "drop unused columns from the model before logging it"
        )
    if precision == "float64":
        imputers_as_where(onx)
        from .float64 import exact_float64  # float64 thresholds and imputed values, not float32-rounded ones

        exact_float64(onx, model)
    onx, slots, onnx_inputs = pack(onx, per_input)
    if rewrite:
        from .simplify import simplify  # fewer nodes, same values: onnxruntime's cost per row is per node

        simplify(onx)
    encodings: dict[str, dict[str, Any]] = {}
    if rewrite and encode:
        from .encoded_inputs import encode_inputs  # the runtime one-hot encodes strings, not the graph

        slots, onnx_inputs, encodings = encode_inputs(onx, slots, onnx_inputs)
    normalise(onx)
    return Converted(
        onnx=onx,
        precision=precision,
        slots=slots,
        onnx_inputs=onnx_inputs,
        outputs=[o.name for o in onx.graph.output],
        encodings=encodings,
    )


_TREE_CLASSES = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    # XGBoost keeps its input in float32 (a DMatrix holds float32) and compares it with float32
    # split conditions: preprocessing in double, then the same cast.
    "XGBClassifier",
    "XGBRegressor",
    "XGBRFClassifier",
    "XGBRFRegressor",
)


def _trees_in_float32(model: Any) -> Any:
    """For the double-precision attempt: preprocessing in double, then a cast to float32
    in front of a tree ensemble.

    That is what scikit-learn itself does (trees cast X to float32), and ONNX tree operators
    have no double version in onnxruntime (sklearn-onnx issue #1074).
    """
    import numpy as np
    from sklearn.pipeline import Pipeline
    from skl2onnx.sklapi import CastTransformer

    final = final_estimator(model)
    if type(final).__name__ not in _TREE_CLASSES:
        return model
    from .trees import FLOAT64_TREES  # these compare in float64: no cast, float64 thresholds instead

    if type(final).__name__ in FLOAT64_TREES:
        return model
    cast = ("edgepack_cast_float32", CastTransformer(dtype=np.float32))
    if isinstance(model, Pipeline):
        return Pipeline([*model.steps[:-1], cast, model.steps[-1]])
    return Pipeline([cast, ("model", model)])
