"""``edgepack export``: the collector's records as Parquet (home side).

pyarrow and the database drivers are imported inside the command, so ``edgepack --help``
works on a device install.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..extras import MissingExtraError, require

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str, option: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds."""
    match = _AGE.match(text)
    if not match:
        raise click.BadParameter(f"expected an age such as 30d, 12h, 90m, 45s or 2w, got {text!r}", param_hint=option)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _require(*extras: str) -> None:
    try:
        for extra in extras:
            require(extra)
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("export")
@click.option("--db", required=True, help="The collector's database: its SQLite file, or postgresql://USER@HOST:PORT/DB.")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the Parquet tree (model=/version=/date= partitions); created if missing.")
@click.option("--format", "format_", type=click.Choice(["parquet"]), default="parquet", show_default=True,
              help="Output format.")
@click.option("--delete-exported-older-than", "retention", metavar="AGE",
              help="After exporting, delete from the database records received more than AGE ago (30d, 12h) "
                   "that an export holds; records not exported are kept.")
@click.option("--run-records", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Most records one export run claims and holds in memory.")
@click.option("--labeled", is_flag=True, help="Instead: one Parquet file of MODEL's records joined with their labels.")
@click.option("--model", help="With --labeled: the registry name of the model.")
@click.option("--since", metavar="AGE", help="With --labeled: only records of the last AGE (30d, 12h).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="With --labeled: the Parquet file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as one JSON object.")
def export_command(
    db: str,
    to: Path | None,
    format_: str,
    retention: str | None,
    run_records: int,
    labeled: bool,
    model: str | None,
    since: str | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Export the collector's records to Parquet, incrementally and each record exactly once.

    Running it again writes only records that arrived since; an export that was killed
    finishes its interrupted run first. DuckDB, pyarrow and Spark read the tree with Hive
    partitioning (model, version, date).
    """
    _require("collector", "export")
    if db.startswith(("postgresql://", "postgres://")):
        _require("postgres")
    if labeled:
        _export_labeled(db, model, since, output, to, retention, as_json)
        return
    for name, value in (("--model", model), ("--since", since), ("-o/--output", output)):
        if value is not None:
            raise click.UsageError(f"{name} goes with --labeled; the partitioned export takes --to DIR")
    if to is None:
        raise click.UsageError("--to DIR is required: the directory of the Parquet tree")
    age = parse_age(retention, "--delete-exported-older-than") if retention is not None else None

    from home.errors import HomeError
    from home.export.runs import ExportOptions, delete_exported, export_parquet

    try:
        report = export_parquet(db, to, options=ExportOptions(run_records=run_records))
        deleted = delete_exported(db, older_than_seconds=age) if age is not None else 0
    except HomeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({
            "records": report.records, "files": report.files, "bytes": report.bytes, "runs": report.runs,
            "resumed": report.resumed, "seconds": round(report.seconds, 3), "deleted": deleted,
        }, sort_keys=True))
        return
    resumed = f" ({report.resumed} interrupted run(s) finished)" if report.resumed else ""
    click.echo(f"exported {report.records} record(s) into {report.files} file(s) under {to}{resumed}", err=True)
    if age is not None:
        click.echo(f"deleted {deleted} exported record(s) received more than {retention} ago", err=True)


def _export_labeled(
    db: str, model: str | None, since: str | None, output: Path | None, to: Path | None, retention: str | None, as_json: bool
) -> None:
    if model is None or output is None:
        raise click.UsageError("--labeled needs --model NAME and -o FILE.parquet")
    if to is not None or retention is not None:
        raise click.UsageError("--labeled writes one file (-o); --to and --delete-exported-older-than are for the partitioned export")
    since_seconds = parse_age(since, "--since") if since is not None else None
    try:
        from home.feedback.labeled import export_labeled
    except ImportError as exc:
        raise click.ClickException(f"the labeled export is not available in this edgepack ({exc})") from exc
    from home.errors import HomeError

    try:
        rows = export_labeled(db, model=model, since_seconds=since_seconds, out=output)
    except HomeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"rows": rows, "out": str(output)}, sort_keys=True))
    else:
        click.echo(f"wrote {rows} labeled record(s) of {model!r} to {output}", err=True)


COMMANDS: list[click.Command] = [export_command]
