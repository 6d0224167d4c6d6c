"""The home side: the service that stores the records devices send.

Needs the ``collector`` extra (starlette, uvicorn); device packages never import it.
The names below are imported when first used, so ``home.client`` (what
``edgepack stats`` uses, httpx only) works on a device install without the extra.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .errors import CollectorError, HomeError
    from .process import CollectorProcess
    from .server import serve
    from .settings import CollectorSettings
    from .tokens import add_token, list_tokens, revoke_token

__all__ = [
    "CollectorError",
    "CollectorProcess",
    "CollectorSettings",
    "HomeError",
    "add_token",
    "create_app",
    "list_tokens",
    "revoke_token",
    "serve",
]

_WHERE = {
    "CollectorError": "errors",
    "CollectorProcess": "process",
    "CollectorSettings": "settings",
    "HomeError": "errors",
    "add_token": "tokens",
    "create_app": "app",
    "list_tokens": "tokens",
    "revoke_token": "tokens",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
