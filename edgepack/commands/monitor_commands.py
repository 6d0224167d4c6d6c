"""Subcommands of home's monitoring: ``edgepack report`` and ``edgepack bundles upload``.

Heavy imports (scipy, numpy, the home package) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..extras import MissingExtraError, require

EXIT_REFUSED = 3
EXIT_UNKNOWN_MODEL = 4


def _require_collector() -> None:
    try:
        require("collector")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc


def _token(token_file: Path | None) -> str:
    if token_file is None:
        raise click.UsageError("--endpoint needs --token-file (a file holding an admin token)")
    token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        raise click.UsageError(f"--token-file {token_file} is empty; expected an admin token from `edgepack token add --admin NAME`")
    return token


@click.command("report")
@click.argument("model")
@click.option("--version", "version", help="Only this registry version (default: every version with a stored manifest).")
@click.option("--since", default="24h", show_default=True, help="Window: 30m, 24h, 7d, ... or 'all' (resolved to whole hours).")
@click.option("--device", "device_id", help="Only this device's records.")
@click.option("--db", "db_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read the collector's SQLite file directly.")
@click.option("--endpoint", help="Or ask a running collector, e.g. http://collector:8787 (needs --token-file).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File holding an admin token.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def report_command(
    model: str, version: str | None, since: str, device_id: str | None, db_path: Path | None, endpoint: str | None,
    token_file: Path | None, as_json: bool,
) -> None:
    """Print MODEL's drift against its bundles' baselines, guardrail flag rates and live metrics.

    Reads the collector's database (--db) or asks a running collector (--endpoint with an
    admin token). Exit status: 0 report printed (whatever its status), 1 error, 2 usage,
    3 token refused, 4 no stored manifest for MODEL (or VERSION).
    """
    import json

    _require_collector()
    from home.monitoring import MonitoringError, UnknownModel, build_report
    from home.monitoring.client import MonitoringHttpError, fetch_report
    from home.monitoring.text import render
    from home.monitoring.window import parse_window

    if (db_path is None) == (endpoint is None):
        raise click.UsageError("give exactly one of --db FILE (read the database) or --endpoint URL (ask the collector)")
    try:
        seconds = parse_window(since)
        if db_path is not None:
            report = build_report(db_path, model, version=version, since_seconds=seconds, device=device_id)
        else:
            report = fetch_report(endpoint, _token(token_file), model, version=version, since=since, device=device_id)  # type: ignore[arg-type]
    except UnknownModel as exc:
        error = click.ClickException(str(exc))
        error.exit_code = EXIT_UNKNOWN_MODEL
        raise error from exc
    except MonitoringHttpError as exc:
        error = click.ClickException(str(exc))
        error.exit_code = EXIT_REFUSED if exc.status in (401, 403) else EXIT_UNKNOWN_MODEL if exc.status == 404 else 1
        raise error from exc
    except MonitoringError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, sort_keys=True) if as_json else render(report), nl=as_json)


@click.group("bundles")
def bundles_group() -> None:
    """Bundle manifests at home (the baselines drift is measured against)."""


@bundles_group.command("upload")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", required=True, help="Collector URL, e.g. http://collector:8787.")
@click.option("--token-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File holding an admin token.")
@click.option("--sha256", help="With a bare manifest.json: the sha256 of the .edgepkg it belongs to.")
@click.option("--wait", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to keep trying while the collector starts.")
def bundles_upload_command(bundle: Path, endpoint: str, token_file: Path, sha256: str | None, wait: float) -> None:
    """Upload BUNDLE (an .edgepkg, verified by the collector; or its manifest.json with --sha256) as a baseline.

    Exit status: 0 stored (or already stored), 1 refused or unreachable, 3 token refused.
    """
    from home.monitoring import MonitoringError
    from home.monitoring.client import MonitoringHttpError, upload_bundle

    try:
        answer = upload_bundle(endpoint, _token(token_file), bundle, sha256=sha256, wait=wait)
    except MonitoringHttpError as exc:
        error = click.ClickException(str(exc))
        if exc.status in (401, 403):
            error.exit_code = EXIT_REFUSED
        raise error from exc
    except MonitoringError as exc:
        raise click.ClickException(str(exc)) from exc
    state = "stored" if answer.get("created") else "already stored"
    checked = "verified" if answer.get("verified") else "not verifiable (bare manifest)"
    click.echo(f"{state}: {answer['model']} v{answer['version']} as bundle {answer['sha256']} ({checked})")


COMMANDS: list[click.Command] = [report_command, bundles_group]
