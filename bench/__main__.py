"""``python -m bench``: run the suite, print the table, write the results file."""

from __future__ import annotations

from pathlib import Path

import click

from .options import PRESETS
from .suite import SECTIONS, run_suite
from .table import render

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", "mode", flag_value="quick", help="Fewer repetitions, one cold-start model, no venvs (under 2 minutes).")
@click.option("--full", "mode", flag_value="full", default=True, help="The full run (default; under 15 minutes).")
@click.option("--smoke", "mode", flag_value="smoke", help="Structure check only: tiny repetition counts, numbers mean nothing.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUTPUT, show_default=True, help="Where to write the results JSON.")
@click.option("--only", "only", multiple=True, type=click.Choice(SECTIONS), help="Run only these sections (repeatable).")
@click.option("--footprint", "footprint", type=click.Choice(["skip", "device", "all"]), default=None, help="Override the mode's venv footprint setting.")
@click.option("--markdown", "markdown", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the table to this Markdown file.")
def main(mode: str, output: Path, only: tuple[str, ...], footprint: str | None, markdown: Path | None) -> None:
    """Measure edgepack against the paths users have today, side by side in one run.

    Reports, never asserts: every figure is printed with its median, p99 and ratio to the
    reference, and each target is marked "meets" or "misses"."""
    options = PRESETS[mode]
    if footprint is not None:
        options = options.with_footprint(footprint)
    report = run_suite(options, sections=only or SECTIONS)
    report.write(output)
    table = render(report)
    if markdown is not None:
        markdown.write_text(table + "\n", encoding="utf-8")
    click.echo(table)
    click.echo(f"results written to {output}")


if __name__ == "__main__":
    main()
