"""Subcommands of the home side: ``edgepack collector`` and ``edgepack token add``.

Starlette and uvicorn are imported inside the commands, so ``edgepack --help`` works on a
device without the collector extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..extras import MissingExtraError, require

def _require_collector() -> None:
    try:
        require("collector")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("collector")
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file for records (created if missing).",
)
@click.option(
    "--tokens",
    "tokens_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens file written by 'edgepack token add'.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    help="Largest body accepted as sent [8 MiB].",
)
@click.option(
    "--max-decompressed-bytes",
    type=click.IntRange(min=1),
    help="Largest body accepted after gzip [32 MiB].",
)
@click.option(
    "--max-records",
    type=click.IntRange(min=1),
    help="Most records per batch [5000].",
)
@click.option(
    "--max-pending-batches",
    type=click.IntRange(min=1),
    help="Most batches in progress at once; more are answered 503 [16].",
)
@click.option(
    "--lock-timeout",
    "lock_timeout_seconds",
    type=click.FloatRange(min=0),
    help="Seconds a write waits for another process's lock on --db [5].",
)
def collector_command(
    db_path: Path,
    tokens_path: Path,
    host: str,
    port: int,
    max_body_bytes: int | None,
    max_decompressed_bytes: int | None,
    max_records: int | None,
    max_pending_batches: int | None,
    lock_timeout_seconds: float | None,
) -> None:
    """Receive and store the records devices send (stops cleanly on SIGTERM/SIGINT)."""
    _require_collector()
    from telemetry.collector import CollectorError, CollectorSettings, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {
        "max_body_bytes": max_body_bytes,
        "max_decompressed_bytes": max_decompressed_bytes,
        "max_records": max_records,
        "max_pending_batches": max_pending_batches,
        "lock_timeout_seconds": lock_timeout_seconds,
    }
    # Options left out keep CollectorSettings' defaults: one place defines them.
    settings = CollectorSettings(
        db_path=db_path, tokens_path=tokens_path, **{name: value for name, value in given.items() if value is not None}
    )
    try:
        serve(settings, host=host, port=port)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@click.group("token")
def token_group() -> None:
    """Device tokens for the collector."""


@token_group.command("add")
@click.argument("device_id")
@click.option(
    "--tokens",
    "tokens_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens file (created if missing).",
)
@click.option("--rotate", is_flag=True, help="Replace the token of a device that already has one.")
def token_add_command(device_id: str, tokens_path: Path, rotate: bool) -> None:
    """Create a token for DEVICE_ID and print it once; only its sha256 is stored."""
    _require_collector()
    from telemetry.collector import CollectorError, add_token

    try:
        token = add_token(tokens_path, device_id, rotate=rotate)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)
    click.echo(
        f"{'rotated' if rotate else 'added'} device {device_id!r} in {tokens_path}; the token above is shown only once",
        err=True,
    )


COMMANDS: list[click.Command] = [collector_command, token_group]
