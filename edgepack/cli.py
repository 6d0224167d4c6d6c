"""The ``edgepack`` command. Each area registers its subcommands from its own module;
heavy libraries are imported inside the commands, so device-side commands work on a
device install without the build or home extras."""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import click

from . import __version__

_CLICK_ERROR = re.compile(r"^Error: ", re.MULTILINE)
SHORT_HELP_WIDTH = 60
"""Longest short help in ``edgepack --help`` (80 columns minus the widest command name)."""


def _lowercase_errors(exc: click.ClickException) -> None:
    """Print click's own errors as ``error: ...``, the style of every edgepack message.

    click writes "Error:", the commands (and most Unix tools) "error:"; one style
    everywhere, whichever side raised it.
    """
    original = exc.show

    def show(file: Any = None) -> None:
        buffer = io.StringIO()
        original(file=buffer)
        click.echo(_CLICK_ERROR.sub("error: ", buffer.getvalue(), count=1), file=file or sys.stderr, nl=False)

    exc.show = show  # type: ignore[method-assign]


class _Cli(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            _lowercase_errors(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            _lowercase_errors(exc)
            raise


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli() -> None:
    """Registry models to verified ONNX bundles on edge devices, and their predictions home."""


def short_help(command: click.Command) -> str:
    """The first sentence of the command's help, shortened at a clause (never mid-word) to fit."""
    text = " ".join((command.help or "").split("\n\n", 1)[0].split())
    text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    for cut in (" (", "; ", ": ", ", "):
        if len(text) <= SHORT_HELP_WIDTH:
            break
        text = text.split(cut, 1)[0]
    if len(text) > SHORT_HELP_WIDTH:
        text = text[:SHORT_HELP_WIDTH].rsplit(" ", 1)[0]
    return text


def _register() -> None:
    from .commands import (
        build_commands,
        collector_commands,
        device_commands,
        export_commands,
        feedback_commands,
        monitor_commands,
        promote_commands,
        quickstart_commands,
        release_commands,
        serve_commands,
        ship_commands,
        telemetry_commands,
    )

    modules = (build_commands, device_commands, telemetry_commands, collector_commands, ship_commands, serve_commands, quickstart_commands)
    modules += (feedback_commands, promote_commands, export_commands, release_commands, monitor_commands)
    for module in modules:
        for command in module.COMMANDS:
            _fit_short_help(command)
            cli.add_command(command)


def _fit_short_help(command: click.Command) -> None:
    # click would cut a long first sentence off mid-phrase with "..." in the command lists.
    if command.short_help is None:
        command.short_help = short_help(command)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _fit_short_help(sub)


_register()


def main() -> None:
    cli()
