"""Running the collector under uvicorn."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from . import heap
from .app import create_app
from .connections import guarded_protocol
from .settings import CollectorSettings
from .stores.backends import backend_for

logger = logging.getLogger("edgepack.collector")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(
    settings: CollectorSettings, host: str = "127.0.0.1", port: int = 8787, *, workers: int = 1, log_file: Path | None = None
) -> None:
    """Serve the collector until SIGTERM or SIGINT, then finish open requests and close the store.

    ``port`` 0 picks a free port; the address actually bound is logged as
    ``listening on http://HOST:PORT``. ``workers`` > 1 runs that many uvicorn worker
    processes on the one socket; they share nothing but the store and the tokens file.
    On a SQLite file they still write one at a time (its write lock, taken by
    ``BEGIN IMMEDIATE``, waited for up to ``lock_timeout_seconds``), but most of a batch's
    cost is checking and converting it before the write, and that runs in parallel.
    ``log_file`` is where they log (stderr if None).
    """
    app = create_app(settings)
    # Open the store once up front so a bad --db fails here with a clear StoreError,
    # not as an opaque "application startup failed" from uvicorn.
    # This also applies pending schema migrations before any worker serves.
    backend_for(settings).open_store().close()
    # Before "listening on" is logged: whoever waits for that line may signal at once.
    heap.tune()
    # Bind the socket here rather than in uvicorn so the real port is known (port 0) and
    # logged before serving; create_server sets SO_REUSEADDR, so a restart can take the
    # same port again at once.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"http://{bound_host if family == socket.AF_INET else f'[{bound_host}]'}:{bound_port}"
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        http=guarded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    logger.info(
        "limits: %d batches in progress (%d per device), %d bytes of bodies in memory (%d per device), "
        "headers within %g s, bodies within %g s, %d connections waiting for headers",
        settings.max_pending_batches, settings.max_pending_per_device, settings.max_inflight_bytes,
        settings.max_inflight_bytes_per_device, settings.header_timeout_seconds, settings.body_timeout_seconds,
        settings.max_header_connections,
    )
    logger.info("listening on %s", address)
    if workers > 1:
        _serve_workers(settings, sock, workers, log_file)
        return
    received: list[int] = []
    previous = _quiet_signals(received, server)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        _restore_signals(previous)
    if received:
        logger.info("stopped on %s", signal.Signals(received[0]).name)


def _serve_workers(settings: CollectorSettings, sock: socket.socket, workers: int, log_file: Path | None) -> None:
    from uvicorn.supervisors import Multiprocess

    from .workers import WORKER_ENV, to_environment

    os.environ[WORKER_ENV] = to_environment(settings, log_file)
    config = uvicorn.Config(
        "home.workers:app",
        factory=True,
        workers=workers,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        http="home.workers:protocol",
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )
    logger.info("%d worker processes on one socket", workers)
    try:
        # The supervisor handles SIGTERM/SIGINT itself: it stops every worker, each of which
        # finishes its requests and closes its pool, and then returns.
        try:
            supervisor = Multiprocess(config, sockets=[sock])
        except TypeError:  # uvicorn before 0.36 takes the worker's entry point too
            supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])  # type: ignore[call-arg]
        supervisor.run()
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket whose accepted connections send without delay."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    # create_server leaves proto=0, so asyncio does not recognise the accepted sockets as
    # TCP and never sets TCP_NODELAY on them; Nagle and delayed ACKs then hold every
    # response ~40 ms. Accepted sockets inherit the option from the listening one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _quiet_signals(received: list[int], server: uvicorn.Server) -> dict[int, Any]:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal against
    # whatever handler was installed before it, which would turn a clean stop into a death
    # by signal (exit -15, or KeyboardInterrupt). Give it a handler that only records (and
    # stops the server, for a signal arriving before uvicorn installs its own handlers).
    if threading.current_thread() is not threading.main_thread():
        return {}

    def record(signum: int, frame: object) -> None:
        received.append(signum)
        server.should_exit = True

    return {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
