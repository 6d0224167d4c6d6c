"""Device side: load a verified bundle and predict locally with onnxruntime.

``import runtime`` stays light; onnxruntime and numpy are imported on first use of
``load``, ``EdgeModel`` or ``ModelSlot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bundle import Bundle, BundleLimits, read_bundle
from .errors import (
    BundleError,
    EdgeError,
    InputError,
    PredictionError,
    RollbackError,
    SchemaChangeError,
    SelfTestError,
    SignatureError,
)
from .options import SessionOptions
from .telemetry_hook import TelemetrySink

if TYPE_CHECKING:
    from .model import EdgeModel, load
    from .slot import ModelSlot

__all__ = [
    "Bundle",
    "BundleError",
    "BundleLimits",
    "EdgeError",
    "EdgeModel",
    "InputError",
    "ModelSlot",
    "PredictionError",
    "RollbackError",
    "SchemaChangeError",
    "SelfTestError",
    "SessionOptions",
    "SignatureError",
    "TelemetrySink",
    "load",
    "read_bundle",
]

_LAZY = {"load": "model", "EdgeModel": "model", "ModelSlot": "slot"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
