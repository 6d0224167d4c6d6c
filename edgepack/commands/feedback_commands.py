"""``edgepack feedback import``: ground-truth labels from a CSV file into the collector.

The home side is imported inside the command, so ``edgepack --help`` works on a device.
Exit status: 0 when every label was stored (or was already), 3 when some were refused
(listed on stderr; the rest was stored), 1 on an error that stored nothing more.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..extras import MissingExtraError, require

SOME_REFUSED = 3
"""Exit status when some labels were refused (conflicts, not fitting the model)."""


@click.group("feedback")
def feedback_group() -> None:
    """Ground truth for recorded predictions (labels), stored at home."""


@feedback_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--db", "db_path",
              help="The collector's database, written directly: its SQLite file, or postgresql://USER@HOST:PORT/DB.")
@click.option("--endpoint", help="The collector's URL, e.g. http://home:8787 (needs --token-file).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="File holding an admin token (with --endpoint).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000),
              help="Labels per batch.")
def import_command(file: Path, db_path: str | None, endpoint: str | None, token_file: Path | None, batch_size: int) -> None:
    """Import labels from a CSV file with columns device, record_id, label[, ts].

    A label cell is read as JSON when it is a number, true/false or a quoted string
    (1 is the int 1, "1" the string), as text otherwise. A label that conflicts with one
    already stored, or does not fit its record's model, is refused and listed; the others
    are stored. Labels for records home does not have yet are stored and joined later.
    """
    try:
        require("collector")
        if db_path is not None and db_path.startswith(("postgresql://", "postgres://")):
            require("postgres")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc
    from home.errors import HomeError
    from home.feedback.csv_import import import_labels

    if (db_path is None) == (endpoint is None):
        raise click.UsageError("give either --db FILE or --endpoint URL (with --token-file)")
    token = token_file.read_text().strip() if token_file is not None else None
    try:
        report = import_labels(file, db=db_path, endpoint=endpoint, token=token, batch_size=batch_size)
    except HomeError as exc:
        raise click.ClickException(str(exc)) from exc
    for conflict in report.conflicts:
        click.echo(f"refused {conflict.device}/{conflict.record_id}: home holds label {conflict.stored!r}, "
                   f"the file says {conflict.sent!r}", err=True)
    for bad in report.invalid:
        click.echo(f"refused {bad.device}/{bad.record_id}: {bad.error}", err=True)
    refused = len(report.conflicts) + len(report.invalid)
    click.echo(f"{report.rows} labels read: {report.accepted} stored, {report.duplicates} already stored, {refused} refused")
    if refused:
        raise SystemExit(SOME_REFUSED)


COMMANDS: list[click.Command] = [feedback_group]
