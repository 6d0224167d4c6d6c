"""A converter for ``TransformedTargetRegressor``, which skl2onnx 1.20 lacks.

The regressor is converted by its own converter (``OnnxSubEstimator``); its prediction then
goes through the inverse of the fitted target transformer, written here for the
transformers whose inverse is a closed form: StandardScaler, MinMaxScaler, MaxAbsScaler,
RobustScaler and the func/inverse_func pairs log/exp, log1p/expm1, sqrt/square and the
identity. Anything else raises ``NotImplementedError`` (a conversion failure naming the
step), and the parity gate checks every graph this produces like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _inverse(transformer: Any, pred: Any, dtype: Any, opv: int) -> Any:
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxDiv, OnnxExp, OnnxMul, OnnxSub
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    def const(values: Any) -> Any:
        return np.asarray(values, dtype=dtype).reshape(1, -1)

    if isinstance(transformer, StandardScaler):
        out = pred
        if transformer.scale_ is not None:
            out = OnnxMul(out, const(transformer.scale_), op_version=opv)
        if transformer.mean_ is not None and transformer.with_mean:
            out = OnnxAdd(out, const(transformer.mean_), op_version=opv)
        return out
    if isinstance(transformer, MinMaxScaler):
        return OnnxDiv(OnnxSub(pred, const(transformer.min_), op_version=opv), const(transformer.scale_), op_version=opv)
    if isinstance(transformer, MaxAbsScaler):
        return OnnxMul(pred, const(transformer.scale_), op_version=opv)
    if isinstance(transformer, RobustScaler):
        out = pred
        if transformer.scale_ is not None:
            out = OnnxMul(out, const(transformer.scale_), op_version=opv)
        if transformer.center_ is not None:
            out = OnnxAdd(out, const(transformer.center_), op_version=opv)
        return out
    if isinstance(transformer, FunctionTransformer):
        func, inverse = transformer.func, transformer.inverse_func
        if func is None and inverse is None:
            return pred
        if func is np.log and inverse is np.exp:
            return OnnxExp(pred, op_version=opv)
        if func is np.log1p and inverse is np.expm1:
            return OnnxSub(OnnxExp(pred, op_version=opv), const([1.0]), op_version=opv)
        if func is np.sqrt and inverse is np.square:
            return OnnxMul(pred, pred, op_version=opv)
        raise NotImplementedError(
            f"TransformedTargetRegressor with func={getattr(func, '__name__', func)}, "
            f"inverse_func={getattr(inverse, '__name__', inverse)}: only log/exp, log1p/expm1 and sqrt/square convert"
        )
    raise NotImplementedError(
        f"TransformedTargetRegressor with a {type(transformer).__name__} target transformer: only StandardScaler, "
        "MinMaxScaler, MaxAbsScaler, RobustScaler and log/exp-style functions convert"
    )


def convert_transformed_target_regressor(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxIdentity, OnnxReshapeApi13
    from skl2onnx.common.data_types import guess_numpy_type

    op = operator.raw_operator
    opv = container.target_opset
    X = operator.inputs[0]
    dtype = guess_numpy_type(X.type)
    pred = OnnxReshapeApi13(OnnxSubEstimator(op.regressor_, X, op_version=opv), np.array([-1, 1], dtype=np.int64), op_version=opv)
    out = OnnxIdentity(_inverse(op.transformer_, pred, dtype, opv), op_version=opv, output_names=[operator.outputs[0]])
    out.add_to(scope, container)


def register() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
    from sklearn.compose import TransformedTargetRegressor

    update_registered_converter(
        TransformedTargetRegressor,
        "EdgepackTransformedTargetRegressor",
        calculate_linear_regressor_output_shapes,
        convert_transformed_target_regressor,
    )
