"""What a uvicorn worker process loads when the collector runs with ``--workers N``.

uvicorn starts its workers with ``spawn``: a fresh interpreter that imports the app and the
HTTP protocol by name. The parent (``server.serve``) puts the collector's settings into the
environment (``WORKER_ENV``, JSON) before starting them; each worker rebuilds the settings,
its logging, the guarded protocol and the app from there. Workers share nothing but the
listening socket, the tokens file and the PostgreSQL database.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from .settings import CollectorSettings

WORKER_ENV = "EDGEPACK_COLLECTOR_WORKER"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def to_environment(settings: CollectorSettings, log_file: Path | None) -> str:
    """The JSON a worker reads its settings (and where to log) from."""
    fields = {name: str(value) if isinstance(value, Path) else value for name, value in dataclasses.asdict(settings).items()}
    return json.dumps({"settings": fields, "log_file": str(log_file) if log_file else None})


def _from_environment() -> tuple[CollectorSettings, str | None]:
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        raise RuntimeError(f"{WORKER_ENV} is not set: home.workers is loaded only by a collector started with --workers")
    document = json.loads(raw)
    return CollectorSettings(**document["settings"]), document["log_file"]


def app() -> Any:
    """The app factory uvicorn calls in each worker."""
    from .app import create_app

    settings, log_file = _from_environment()
    if log_file:
        logging.basicConfig(level=logging.INFO, format=f"%(process)d {LOG_FORMAT}", filename=log_file)
    else:
        logging.basicConfig(level=logging.INFO, format=f"%(process)d {LOG_FORMAT}")
    return create_app(settings)


def __getattr__(name: str) -> Any:
    # uvicorn imports the HTTP protocol by name ("home.workers:protocol"); the guarded
    # protocol is a class built from the settings, so it is made on that first lookup.
    if name == "protocol":
        from .connections import guarded_protocol

        value = guarded_protocol(_from_environment()[0])
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
