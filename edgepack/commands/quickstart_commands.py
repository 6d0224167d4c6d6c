"""Subcommands: quickstart."""

from __future__ import annotations

import click

from runtime.errors import EdgeError


@click.command()
@click.argument("directory", default="edgepack-quickstart", type=click.Path(file_okay=False))
def quickstart(directory: str) -> None:
    """Run the whole path in DIRECTORY: registry, retraining, signed bundle, device, collector."""
    from edgepack.quickstart import run_quickstart

    try:
        report = run_quickstart(directory, say=lambda line: click.echo(line, err=True))
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.render())


COMMANDS: list[click.Command] = [quickstart]
