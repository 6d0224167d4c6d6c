"""Node attributes as integers, never booleans, before protobuf sees them.

skl2onnx 1.20's tree converters pass Python/numpy booleans in integer attributes
(HistGradientBoosting's ``nodes_missing_value_tracks_true``: ``False`` for leaves, numpy bools
for splits). protobuf 6 warns ("AttributeProto.ints: Expected an int, got a boolean ... rejected
in 7.34.0") and protobuf 7 raises inside ``onnx.helper.make_attribute``, so the attribute is
refused while skl2onnx builds the node: it cannot be repaired after the conversion. edgepack
wraps the one place every skl2onnx (and onnxmltools) converter adds a node and turns booleans
into the integers ONNX means (``True`` -> 1), which is what protobuf 6 stored anyway.
"""

from __future__ import annotations

import functools
from typing import Any

_MARK = "_edgepack_ints_not_bools"


def as_ints(value: Any) -> Any:
    """``value`` with every boolean (Python or numpy, alone, in a sequence or an array) as an int."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.astype(np.int64) if value.dtype == np.bool_ else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
        return type(value)(int(v) if isinstance(v, (bool, np.bool_)) else v for v in value)
    return value


def install() -> None:
    """Wrap ``skl2onnx``'s ``ModelComponentContainer.add_node`` once per process (idempotent)."""
    from skl2onnx.common._container import ModelComponentContainer

    original = ModelComponentContainer.add_node
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def add_node(self: Any, op_type: Any, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        return original(self, op_type, inputs, outputs, *args, **{k: as_ints(v) for k, v in attrs.items()})

    setattr(add_node, _MARK, True)
    ModelComponentContainer.add_node = add_node  # type: ignore[method-assign]
