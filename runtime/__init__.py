"""Device side: load a verified bundle and predict locally with onnxruntime.

::

    model = runtime.load("fire-risk.edgepkg", public_key="edge.pub", require_signature=True)
    model.predict({"temp_c": 31.5, "region": "north"})
    # {"prediction": 1, "probabilities": {0: 0.2, 1: 0.8}, "flags": []}
    model.predict([row, row])          # list of results; a DataFrame works too
    model.predict_batch({"temp_c": arr, "region": arr})
    # {"prediction": ndarray (N,), "probabilities": ndarray (N, C), "flags": {row: [...]}}

``load`` checks the archive, hashes and signature, replays the golden rows (self-test)
and runs once before it returns. Labels keep their original type (int, str, bool);
regression results are ``{"prediction": float, "flags": [...]}``. Flags are
``"unseen_category:<feature>"``, ``"out_of_range:<feature>"`` and
``"prediction_out_of_range"``. Bad input raises ``InputError`` (a ``ValueError``) naming
the feature, the value and what was expected. ``ModelSlot`` swaps bundles on a running
device. ``SessionOptions`` holds the onnxruntime settings (1 thread, no spinning, no
memory arena or pattern by default).

``import runtime`` stays light; onnxruntime and numpy are imported on first use of
``load``, ``EdgeModel`` or ``ModelSlot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bundle import Bundle, BundleLimits, read_bundle
from .errors import (
    BundleError,
    DowngradeError,
    EdgeError,
    InputError,
    PredictionError,
    RollbackError,
    SchemaChangeError,
    SelfTestError,
    SignatureError,
    StateFileError,
    StoreError,
)
from .options import SessionOptions
from .telemetry_hook import TelemetrySink

if TYPE_CHECKING:
    from .highwater import HighWater
    from .model import EdgeModel, load
    from .follower import StoreFollower
    from .slot import ModelSlot
    from .store import ModelStore

__all__ = [
    "Bundle",
    "BundleError",
    "BundleLimits",
    "DowngradeError",
    "EdgeError",
    "EdgeModel",
    "HighWater",
    "InputError",
    "ModelSlot",
    "ModelStore",
    "PredictionError",
    "RollbackError",
    "SchemaChangeError",
    "SelfTestError",
    "SessionOptions",
    "SignatureError",
    "StateFileError",
    "StoreError",
    "StoreFollower",
    "TelemetrySink",
    "load",
    "read_bundle",
]

_LAZY = {"load": "model", "EdgeModel": "model", "ModelSlot": "slot", "HighWater": "highwater",
         "ModelStore": "store", "StoreFollower": "follower"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
