"""The ``edgepack`` command. Each area registers its subcommands from its own module;
heavy libraries are imported inside the commands, so device-side commands work on a
device install without the build or home extras."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli() -> None:
    """Registry models to verified ONNX bundles on edge devices, and their predictions home."""


def _register() -> None:
    from .commands import (
        build_commands,
        collector_commands,
        device_commands,
        quickstart_commands,
        ship_commands,
        telemetry_commands,
    )

    for module in (build_commands, device_commands, telemetry_commands, collector_commands, ship_commands, quickstart_commands):
        for command in module.COMMANDS:
            cli.add_command(command)

    from .commands import serve_commands  # serve, install, store, agent

    for command in serve_commands.COMMANDS:
        cli.add_command(command)


_register()


def main() -> None:
    cli()
