"""``edgepack serve``: a local inference endpoint (Open Inference Protocol V2 over a unix
socket or loopback) for applications that are not written in Python.

The model side lives in ``runtime`` (``ModelSlot``, ``StoreFollower``); this package is
the HTTP side. uvicorn is imported only when ``serve`` runs.
"""

from __future__ import annotations

from .app import FeedbackSink, ModelSource, ServeApp
from .errors import RequestError, ServeError
from .options import ServeOptions
from .protocol import ModelProtocol

__all__ = ["FeedbackSink", "ModelProtocol", "ModelSource", "RequestError", "ServeApp", "ServeError", "ServeOptions", "serve"]


def serve(
    source: ModelSource, options: ServeOptions, *, version: str = "", log_level: str = "warning", feedback: FeedbackSink | None = None
) -> None:
    """Serve ``source`` as ``options`` say until SIGTERM/SIGINT (see ``server.serve``); with
    ``feedback`` (the telemetry buffer), ``POST /v1/feedback`` queues labels into it."""
    from .server import serve as run

    run(source, options, version=version, log_level=log_level, feedback=feedback)
