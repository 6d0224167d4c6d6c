"""What a uvicorn worker process loads when the collector runs with ``--workers N``.

uvicorn starts its workers with ``spawn``: a fresh interpreter that imports the app and the
HTTP protocol by name. The parent (``server.serve``) puts the collector's settings into the
environment (``WORKER_ENV``, JSON) before starting them; each worker rebuilds the settings,
its logging, the guarded protocol and the app from there. Workers share nothing but the
listening socket, the tokens file and the PostgreSQL database.

A worker stops itself (SIGTERM, so it finishes its open requests) once the process that
started it is gone: uvicorn's supervisor stops its workers on SIGTERM and SIGINT, but a
supervisor killed outright (SIGKILL, the OOM killer) would leave them serving on the socket,
holding the port and the database pool, with nobody to stop them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import heap
from .settings import CollectorSettings

WORKER_ENV = "EDGEPACK_COLLECTOR_WORKER"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PARENT_POLL_SECONDS = 1.0


def to_environment(settings: CollectorSettings, log_file: Path | None) -> str:
    """The JSON a worker reads its settings (and where to log) from."""
    fields = {name: str(value) if isinstance(value, Path) else value for name, value in dataclasses.asdict(settings).items()}
    return json.dumps({"settings": fields, "log_file": str(log_file) if log_file else None, "parent": os.getpid()})


@functools.cache
def _document() -> dict[str, Any]:
    """The worker's environment document, parsed once (the app factory and the protocol
    lookup both read it)."""
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        raise RuntimeError(f"{WORKER_ENV} is not set: home.workers is loaded only by a collector started with --workers")
    return json.loads(raw)


@functools.cache
def _from_environment() -> tuple[CollectorSettings, str | None]:
    document = _document()
    return CollectorSettings(**document["settings"]), document["log_file"]


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this worker once ``parent`` is no longer its parent (it died and we were reparented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        logging.getLogger("edgepack.collector").warning(
            "the collector process %d that started this worker is gone: stopping", parent
        )
        os.kill(os.getpid(), signal.SIGTERM)

    # Polling rather than prctl(PR_SET_PDEATHSIG): portable, and it cannot miss a parent
    # that died before the watch began (getppid() has already changed then).
    threading.Thread(target=watch, name="edgepack-parent-watch", daemon=True).start()


def app() -> Any:
    """The app factory uvicorn calls in each worker."""
    from .app import create_app

    settings, log_file = _from_environment()
    if log_file:
        logging.basicConfig(level=logging.INFO, format=f"%(process)d {LOG_FORMAT}", filename=log_file)
    else:
        logging.basicConfig(level=logging.INFO, format=f"%(process)d {LOG_FORMAT}")
    _stop_with_parent(int(_document()["parent"]))
    app = create_app(settings)
    heap.tune()
    return app


def __getattr__(name: str) -> Any:
    # uvicorn imports the HTTP protocol by name ("home.workers:protocol"); the guarded
    # protocol is a class built from the settings, so it is made on that first lookup.
    if name == "protocol":
        from .connections import guarded_protocol

        value = guarded_protocol(_from_environment()[0])
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
