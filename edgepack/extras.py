"""Turn a missing optional dependency into an error that names the install command."""

from __future__ import annotations

import importlib

from runtime.errors import EdgeError

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "packager": ("mlflow", "sklearn", "skl2onnx", "onnx", "pandas"),
    "collector": ("starlette", "uvicorn", "prometheus_client", "scipy"),
    "postgres": ("psycopg", "psycopg_pool"),
    "export": ("pyarrow",),
}


class MissingExtraError(EdgeError, ImportError):
    """An optional part of edgepack is used without its extra installed."""


def require(extra: str) -> None:
    """Import-check the modules of ``extra``; raise ``MissingExtraError`` naming the pip command."""
    missing = []
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtraError(
            f"this needs the '{extra}' extra ({', '.join(missing)} not importable); "
            f"install it with: pip install 'edgepack[{extra}]'"
        )
