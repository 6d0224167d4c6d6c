"""Run the serve app under uvicorn on the listener, with the model source it serves."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .app import FeedbackSink, ModelSource, ServeApp
from .errors import ServeError
from .listener import listener
from .options import ServeOptions

UVICORN_PIP = "pip install 'uvicorn>=0.29' 'httptools>=0.6' 'uvloop>=0.19'"


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise ServeError(f"edgepack serve needs uvicorn (part of the device install); install it with: {UVICORN_PIP}") from exc
    return uvicorn


def _loop_implementation() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        logging.getLogger(__name__).info("uvloop is not installed: serving on asyncio's loop (15-40 µs more per request)")
        return "asyncio"
    return "uvloop"


def _http_implementation() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        logging.getLogger(__name__).warning("httptools is missing: serving with h11, ~2x slower per request (%s)", UVICORN_PIP)
        return "h11"
    return "httptools"


def serve(
    source: ModelSource, options: ServeOptions, *, version: str = "", log_level: str = "warning", feedback: FeedbackSink | None = None
) -> None:
    """Listen as ``options`` says and answer until SIGTERM/SIGINT. Prints where it listens on stderr."""
    uvicorn = _uvicorn()
    sock, where = listener(options)
    try:
        config = uvicorn.Config(
            ServeApp(source, options, server_version=version, feedback=feedback),
            http=_http_implementation(),
            loop=_loop_implementation(),
            lifespan="off",
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_keep_alive=30,
        )
        model = source.model
        serving = f"{model.name} v{model.version} (sha256 {model.sha256[:12]})" if model is not None else "nothing yet"
        print(f"edgepack serve: listening on {where}, serving {serving}", file=sys.stderr, flush=True)
        if threading.current_thread() is threading.main_thread():
            # uvicorn re-raises the signal it stopped on into the handler that was there
            # before it; with the default handler that kills the process before the buffer
            # is flushed and closed. A stop is a clean exit (status 0) here.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda signum, frame: None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if options.socket is not None:
            with contextlib.suppress(OSError):
                Path(options.socket).unlink()
