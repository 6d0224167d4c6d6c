"""Subcommands: ``edgepack sync`` (device side: send the telemetry buffer home)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

log = logging.getLogger("edgepack.sync")


class _Shown(logging.Handler):
    """Remembers the messages the log already showed, so the final error is printed once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.add(record.getMessage())


def _wait_for(endpoint: str, seconds: float, stop: threading.Event) -> bool:
    """Poll ``GET /healthz`` until the collector answers (any HTTP status) or ``seconds`` pass."""
    import httpx

    deadline = time.monotonic() + seconds
    url = endpoint.rstrip("/") + "/healthz"
    while True:
        try:
            httpx.get(url, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            return True
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline or stop.wait(0.2):
            return False

EXIT_UNAUTHORIZED = 3
EXIT_UNAVAILABLE = 4
EXIT_REJECTED = 5


@click.command()
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The telemetry buffer the app records into (SQLite file).")
@click.option("--endpoint", required=True, help="Collector base URL, e.g. http://collector:8787.")
@click.option("--token-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding this device's bearer token (plain text).")
@click.option("--once", is_flag=True, help="Drain the buffer once and exit instead of running as a service.")
@click.option("--interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between rounds once the buffer is drained (service mode).")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=2000, show_default=True, help="Records per batch.")
@click.option("--deadline", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Overall seconds one request may take.")
@click.option("--gzip-level", type=click.IntRange(0, 9), default=1, show_default=True,
              help="zlib level when bodies are gzipped (without the zstandard package, or for a collector "
                   "that refuses zstd): 1 is cheapest in CPU, 6-9 smallest on slow links.")
@click.option("--wire", type=click.Choice(["packed", "json"]), default="packed", show_default=True,
              help="Body format: the MessagePack batch, or JSON (any collector takes it; packed steps down to "
                   "JSON by itself for a collector that refuses it). See docs/wire.md.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="First wait up to this many seconds for the collector to answer (e.g. one starting next to it).")
def sync(
    db_path: Path, endpoint: str, token_file: Path, once: bool, interval: float, batch_size: int, deadline: float, gzip_level: int,
    wait_seconds: float, wire: str = "packed",
) -> None:
    """Send the predictions buffered in --db to the collector, exactly once.

    Runs until SIGTERM/SIGINT (finishing the request in flight), or with --once until the
    buffer is drained. Exit status: 0 ok, 1 buffer error, 2 usage, 3 token refused,
    4 collector unavailable (--once), 5 endpoint refused the request.
    """
    import telemetry

    token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise click.UsageError(f"--token-file {token_file} is empty; expected the device token issued by `edgepack token add`")
    if once and not db_path.exists():
        raise click.UsageError(f"--db {db_path} does not exist; expected the telemetry buffer the app records into")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)

    interactive = once and sys.stderr.isatty()
    logging.basicConfig(
        level=logging.WARNING if interactive else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not db_path.exists():
        # As a service (e.g. a container's default command) sync may start before the app
        # has recorded anything: wait for the buffer instead of exiting into a restart loop.
        logging.getLogger("telemetry.sync").warning("--db %s does not exist yet; waiting for the app to create it", db_path)
        while not db_path.exists():
            if stop.wait(min(interval, 1.0) or 0.1):
                click.echo("stop_requested: sent 0 records in 0 batches (the buffer never appeared)")
                return
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per batch is ours
    shown = _Shown()
    logging.getLogger().addHandler(shown)
    if wait_seconds and not _wait_for(endpoint, wait_seconds, stop):
        log.warning("the collector at %s did not answer within %g s (--wait); trying anyway", endpoint, wait_seconds)
    options = telemetry.SyncOptions(batch_size=batch_size, request_deadline=deadline, interval=interval, gzip_level=gzip_level,
                                    wire=wire)  # type: ignore[arg-type]
    try:
        # As a service, the app may still be creating the file: whichever side gets the
        # write lock first creates the schema, the other finds it.
        with telemetry.Buffer(db_path, create=not once) as buffer:
            log.info(
                "sending %s to %s: %d records waiting, batches of %d; %s",
                db_path, endpoint, buffer.pending(), batch_size,
                "until drained" if once else f"then every {interval:g} s until SIGTERM or Ctrl-C",
            )
            if interactive:
                with click.progressbar(length=buffer.pending(), label="syncing", file=sys.stderr) as bar:
                    with telemetry.SyncService(buffer, endpoint, token=token, options=options,
                                               on_batch=lambda report: bar.update(report.records)) as service:
                        result = service.sync_once(stop)
            else:
                with telemetry.SyncService(buffer, endpoint, token=token, options=options) as service:
                    result = service.sync_once(stop) if once else service.run(stop)
    except telemetry.SyncConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except telemetry.TelemetryError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{result.stopped}: sent {result.sent} records in {result.batches} batches "
        f"(accepted {result.accepted}, duplicates {result.duplicates}), dead-lettered {result.dead_lettered}, "
        f"retries {result.retries}"
    )
    if result.error and result.error not in shown.messages:  # the log may have shown it already
        click.echo(f"error: {result.error}", err=True)
    codes = {"unauthorized": EXIT_UNAUTHORIZED, "unavailable": EXIT_UNAVAILABLE, "rejected": EXIT_REJECTED}
    sys.exit(codes.get(result.stopped, 0))


COMMANDS: list[click.Command] = [sync]
