"""``edgepack serve``: a local inference endpoint (Open Inference Protocol V2 over a unix
socket or loopback) for applications that are not written in Python.

The model side lives in ``runtime`` (``ModelSlot``, ``StoreFollower``); this package is
the HTTP side. uvicorn is imported only when ``serve`` runs.
"""

from __future__ import annotations

from .app import ServeApp
from .errors import RequestError, ServeError
from .options import ServeOptions
from .protocol import ModelProtocol

__all__ = ["ModelProtocol", "RequestError", "ServeApp", "ServeError", "ServeOptions", "serve"]


def serve(*args, **kwargs):  # type: ignore[no-untyped-def]
    from .server import serve as run

    return run(*args, **kwargs)
