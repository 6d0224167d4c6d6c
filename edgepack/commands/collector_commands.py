"""Subcommands of the home side: ``edgepack collector``, ``edgepack token add/list/revoke``
and ``edgepack stats``.

Starlette and uvicorn are imported inside the commands, so ``edgepack --help`` works on a
device without the collector extra.
"""

from __future__ import annotations

import logging
import os
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
    "db",
    required=True,
    help="SQLite file for records (created if missing), or postgresql://USER@HOST:PORT/DB shared by several collectors.",
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
    "--max-pending-per-device",
    type=click.IntRange(min=1),
    help="Most batches one device may have in progress; more are answered 429 [4].",
)
@click.option(
    "--max-inflight-bytes",
    type=click.IntRange(min=1),
    help="Most body bytes (after gzip) in memory at once over all devices; 503 beyond [2 x --max-decompressed-bytes].",
)
@click.option(
    "--max-inflight-bytes-per-device",
    type=click.IntRange(min=1),
    help="Most body bytes (after gzip) one device may have in memory; 429 beyond [--max-decompressed-bytes].",
)
@click.option(
    "--header-timeout",
    "header_timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a connection has to send complete request headers [10].",
)
@click.option(
    "--body-timeout",
    "body_timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a request has to send its whole body; 408 after [60].",
)
@click.option(
    "--max-header-connections",
    type=click.IntRange(min=1),
    help="Most connections waiting for their request headers at once [256].",
)
@click.option(
    "--lock-timeout",
    "lock_timeout_seconds",
    type=click.FloatRange(min=0),
    help="Seconds a write waits for another process's lock on --db [5].",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes on the one port; on a SQLite --db they write one at a time but check batches in parallel.",
)
@click.option(
    "--db-pool-size",
    type=click.IntRange(min=1),
    help="With a postgresql:// --db: connections (and batches stored at once) per collector process [8].",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append the log to this file (created owner-only: it names devices) instead of stderr.",
)
@click.option(
    "--releases",
    "releases_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Release repository to serve to devices (edgepack release init) [releases/ next to --db].",
)
def collector_command(
    db: str,
    tokens_path: Path,
    host: str,
    port: int,
    max_body_bytes: int | None,
    max_decompressed_bytes: int | None,
    max_records: int | None,
    max_pending_batches: int | None,
    max_pending_per_device: int | None,
    max_inflight_bytes: int | None,
    max_inflight_bytes_per_device: int | None,
    header_timeout_seconds: float | None,
    body_timeout_seconds: float | None,
    max_header_connections: int | None,
    lock_timeout_seconds: float | None,
    workers: int,
    db_pool_size: int | None,
    log_file: Path | None,
    releases_path: Path | None = None,
) -> None:
    """Receive and store the records devices send (stops cleanly on SIGTERM/SIGINT)."""
    _require_collector()
    from home import CollectorError, CollectorSettings, serve

    stream = None
    if log_file is not None:
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise click.UsageError(f"--log-file {log_file}: {exc.strerror}") from exc
        stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream)
    given = {
        "max_body_bytes": max_body_bytes,
        "max_decompressed_bytes": max_decompressed_bytes,
        "max_records": max_records,
        "max_pending_batches": max_pending_batches,
        "max_pending_per_device": max_pending_per_device,
        "max_inflight_bytes": max_inflight_bytes,
        "max_inflight_bytes_per_device": max_inflight_bytes_per_device,
        "header_timeout_seconds": header_timeout_seconds,
        "body_timeout_seconds": body_timeout_seconds,
        "max_header_connections": max_header_connections,
        "lock_timeout_seconds": lock_timeout_seconds,
        "db_pool_size": db_pool_size,
        "releases_path": releases_path,
    }
    # Options left out keep CollectorSettings' defaults: one place defines them.
    try:
        where = {"db_url": db} if db.startswith(("postgresql://", "postgres://")) else {"db_path": Path(db)}
        settings = CollectorSettings(
            **where, tokens_path=tokens_path, **{name: value for name, value in given.items() if value is not None}
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        serve(settings, host=host, port=port, workers=workers, log_file=log_file)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@click.group("token")
def token_group() -> None:
    """Device and admin tokens for the collector."""


_TOKENS_OPTION = click.option(
    "--tokens",
    "tokens_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tokens file (created if missing by 'token add').",
)


@token_group.command("add")
@click.argument("device_id")
@_TOKENS_OPTION
@click.option("--rotate", is_flag=True, help="Replace the token of a device (or admin) that already has one.")
@click.option(
    "--admin",
    is_flag=True,
    help="An admin token named DEVICE_ID: reads the whole fleet's stats, cannot upload batches.",
)
def token_add_command(device_id: str, tokens_path: Path, rotate: bool, admin: bool) -> None:
    """Create a token for DEVICE_ID and print it once; only its sha256 is stored.

    Save it straight into the device's token file: edgepack token add pump-7 --tokens tokens.json > device.token
    """
    _require_collector()
    from home import CollectorError, add_token

    try:
        token = add_token(tokens_path, device_id, rotate=rotate, admin=admin)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)
    role = "admin" if admin else "device"
    click.echo(
        f"{'rotated' if rotate else 'added'} {role} {device_id!r} in {tokens_path}; the token above is shown only once",
        err=True,
    )


@token_group.command("list")
@_TOKENS_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def token_list_command(tokens_path: Path, as_json: bool) -> None:
    """List who holds a token (never the tokens: only their sha256 is stored)."""
    _require_collector()
    import dataclasses
    import json
    import time

    from home import CollectorError, list_tokens

    try:
        entries = list_tokens(tokens_path)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for entry in entries:
            click.echo(json.dumps(dataclasses.asdict(entry), sort_keys=True))
        return
    if not entries:
        click.echo(f"no tokens in {tokens_path}", err=True)
        return
    width = max(len(entry.name) for entry in entries)
    click.echo(f"{'NAME':<{width}}  ROLE    ADDED (UTC)          SHA256")
    for entry in entries:
        added = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.added)) if entry.added is not None else "-"
        click.echo(f"{entry.name:<{width}}  {entry.role:<6}  {added:<19}  {entry.sha256_prefix}...")


@token_group.command("revoke")
@click.argument("device_id")
@_TOKENS_OPTION
def token_revoke_command(device_id: str, tokens_path: Path) -> None:
    """Remove the token of DEVICE_ID (or of an admin); a running collector refuses it at once.

    Records already stored for the device are kept.
    """
    _require_collector()
    from home import CollectorError, revoke_token

    try:
        role = revoke_token(tokens_path, device_id)
    except CollectorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked the token of {role} {device_id!r} in {tokens_path}; a running collector refuses it from now on", err=True)



@click.command("stats")
@click.option("--endpoint", required=True, help="Collector URL, e.g. http://collector:8787.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding a device token (that device's stats) or an admin token (the fleet's).",
)
@click.option("--device", "device_id", help="With an admin token: one device's stats instead of the fleet's.")
@click.option("--json", "as_json", is_flag=True, help="The collector's JSON answer, as is.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds to wait.")
def stats_command(endpoint: str, token_file: Path, device_id: str | None, as_json: bool, timeout: float) -> None:
    """Show what the collector stored: for this device with a device token, fleet-wide with an admin token.

    Exit status: 0 ok, 1 collector unreachable or failing, 2 usage, 3 token refused (401/403).
    """
    import json

    from home.client import StatsError, fetch_stats, format_stats

    token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise click.UsageError(f"--token-file {token_file} is empty; expected a token issued by `edgepack token add`")
    try:
        stats = fetch_stats(endpoint, token, device=device_id, timeout=timeout)
    except StatsError as exc:
        error = click.ClickException(str(exc))
        if exc.status in (401, 403):
            error.exit_code = 3
        raise error from exc
    click.echo(json.dumps(stats, sort_keys=True) if as_json else format_stats(stats))


COMMANDS: list[click.Command] = [collector_command, token_group, stats_command]
