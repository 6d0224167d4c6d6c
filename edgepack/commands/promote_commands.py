"""``edgepack promote`` and ``edgepack history`` (placeholder while the library lands)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
