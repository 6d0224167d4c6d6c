"""Device side: load a verified bundle and predict locally with onnxruntime."""

from .bundle import Bundle, BundleLimits, read_bundle
from .errors import BundleError, EdgeError, InputError, SelfTestError, SignatureError

__all__ = [
    "Bundle",
    "BundleError",
    "BundleLimits",
    "EdgeError",
    "InputError",
    "SelfTestError",
    "SignatureError",
    "read_bundle",
]
