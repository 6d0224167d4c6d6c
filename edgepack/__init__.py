"""edgepack: registry models to verified ONNX bundles on edge devices, and their predictions home."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgepack")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
