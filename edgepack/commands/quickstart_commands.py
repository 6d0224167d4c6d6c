"""Subcommands: quickstart."""

from __future__ import annotations

import click

from runtime.errors import EdgeError


DEFAULT_DIRECTORY = "edgepack-quickstart"


@click.command(short_help="Run the whole path once, in ./edgepack-quickstart")
@click.argument("directory", default=DEFAULT_DIRECTORY, type=click.Path(file_okay=False))
def quickstart(directory: str) -> None:
    """Run the whole path in DIRECTORY (default: ./edgepack-quickstart): registry, retraining,
    signed bundle, device, collector.

    Everything stays in DIRECTORY; a re-run starts it afresh but keeps its signing key
    (keys/). The report ends with where each file went and the commands that continue
    from there (README.md, "From registry to device").
    """
    from edgepack.quickstart import run_quickstart

    try:
        report = run_quickstart(directory, say=lambda line: click.echo(line, err=True))
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.render())


COMMANDS: list[click.Command] = [quickstart]
