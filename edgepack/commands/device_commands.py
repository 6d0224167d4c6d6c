"""Subcommands for the device: ``inspect``, ``verify`` and ``predict``.

They need only the device install (runtime/: onnxruntime, numpy, cryptography); the
runtime is imported inside each command so that ``edgepack --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

EXIT_BAD_ROWS = 1
"""``predict``: at least one row was refused (the others were still predicted)."""
EXIT_BUNDLE = 3
"""The bundle (or its signature, or its self-test) was refused."""
EXIT_UNVERIFIED = 4
"""``verify``: the bundle would load, but its authenticity was not checked (no ``--public-key``)."""


def _fail(exc: Exception) -> click.ClickException:
    error = click.ClickException(str(exc))
    error.exit_code = EXIT_BUNDLE
    return error


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description and full manifest as JSON.")
def inspect(bundle: str, as_json: bool) -> None:
    """Show what BUNDLE holds: model, inputs, outputs, parity, signature and files.

    Hashes are checked (a tampered bundle is refused); the signature is only reported,
    use `edgepack verify --public-key` to check it.
    """
    from runtime.bundle import read_bundle
    from runtime.errors import EdgeError
    from runtime.inspection import describe, render

    try:
        info = describe(read_bundle(bundle))
    except EdgeError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        click.echo(render(info))


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--public-key", type=click.Path(dir_okay=False), help="Ed25519 public key (PEM) to check the signature with.")
@click.option("--require-signature", is_flag=True, help="Refuse an unsigned bundle.")
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Without --public-key, exit 0 although authenticity was not checked (development only).",
)
def verify(bundle: str, public_key: str | None, require_signature: bool, allow_unsigned: bool) -> None:
    """Check BUNDLE as a device would: hashes, signature and self-test on the golden rows.

    Exits 0 when the bundle would load and its signature verified, 3 with the reason when
    it would not load. Without --public-key nobody checked who built the bundle: it exits
    4 (EXIT_UNVERIFIED), unless --allow-unsigned is given.
    """
    import runtime

    try:
        model = runtime.load(bundle, public_key=public_key, require_signature=require_signature)
    except runtime.EdgeError as exc:
        raise _fail(exc) from exc
    def line(status: str, signature: str) -> str:
        return (
            f"{status} {model.name} version {model.version}: hashes match, {signature}, "
            f"self-test passed on {model.golden_rows} golden rows  (sha256 {model.sha256})"
        )

    if model.signature_verified:
        click.echo(line("OK", "signature verified"))
        return
    why = "signed, but no --public-key was given" if model.signed else "the bundle is not signed"
    click.echo(line("UNVERIFIED", f"authenticity NOT checked ({why})"))
    if allow_unsigned:
        return  # runtime.load has logged its WARNING about the unchecked signature
    click.echo(
        "error: authenticity was NOT checked: pass --public-key PEM (the edge.pub of the signing key), "
        "or --allow-unsigned to accept a bundle nobody verified",
        err=True,
    )
    sys.exit(EXIT_UNVERIFIED)


def _json_key(label: Any) -> str:
    return label if isinstance(label, str) else json.dumps(label)


def _json_result(row: int, result: dict[str, Any]) -> str:
    out: dict[str, Any] = {"row": row, "prediction": result["prediction"]}
    if "probabilities" in result:
        out["probabilities"] = {_json_key(k): v for k, v in result["probabilities"].items()}
    out["flags"] = result["flags"]
    return json.dumps(out)


def _buffer_options(func: Any) -> Any:
    """``--buffer`` and the ``telemetry.BufferOptions`` a library caller would pass."""
    options = [
        click.option("--buffer", "buffer_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Record every prediction in this telemetry buffer (SQLite, created if missing) for `edgepack sync`."),
        click.option("--durability", type=click.Choice(["power", "process"]),
                     help="With --buffer: power survives power loss, process only process crashes, for less I/O (default power)."),
        click.option("--max-bytes", type=click.IntRange(min=0),
                     help="With --buffer: bound on stored record bytes (default 256 MiB; 0: no bound)."),
        click.option("--when-full", type=click.Choice(["drop_oldest", "drop_newest"]),
                     help="With --buffer: what to give up at --max-bytes (default drop_oldest); drops are counted."),
        click.option("--sample-rate", type=click.FloatRange(0, 1),
                     help="With --buffer: fraction of predictions kept, decided per record id (default 1)."),
        click.option("--group-size", type=click.IntRange(min=1), help="With --buffer: most records per transaction (default 1000)."),
        click.option("--group-delay", type=click.FloatRange(min=0),
                     help="With --buffer: seconds a record may wait before its group commits (default 0.05)."),
        click.option("--max-queued", type=click.IntRange(min=1),
                     help="With --buffer: records held in memory for the writer (default 250000); more are dropped and counted."),
        click.option("--busy-timeout", type=click.FloatRange(min=0),
                     help="With --buffer: seconds to wait for another process's lock, e.g. sync (default 30)."),
        click.option("--retry-delay", type=click.FloatRange(min=0, min_open=True),
                     help="With --buffer: seconds between attempts when the disk refuses a write (default 1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_BUFFER_OPTIONS = ("durability", "max_bytes", "when_full", "sample_rate", "group_size", "group_delay", "max_queued",
                   "busy_timeout", "retry_delay")


def _open_buffer(path: Path | None, given: dict[str, Any]) -> Any:
    """The ``telemetry.Buffer`` to record into (or a null context without --buffer)."""
    chosen = {name: value for name, value in given.items() if value is not None}
    if path is None:
        if chosen:
            flags = ", ".join("--" + name.replace("_", "-") for name in chosen)
            raise click.UsageError(f"{flags} {'needs' if len(chosen) == 1 else 'need'} --buffer FILE: buffer options do nothing without a buffer")
        return contextlib.nullcontext(None)
    import telemetry

    if chosen.get("max_bytes") == 0:
        chosen["max_bytes"] = None  # 0 on the command line: no bound
    try:
        return telemetry.Buffer(path, **chosen)
    except telemetry.OptionsError as exc:
        raise click.UsageError(str(exc)) from exc
    except telemetry.TelemetryError as exc:
        raise click.ClickException(f"cannot open the telemetry buffer --buffer {path}: {exc}") from exc


def _first_line(stream: Iterable[str]) -> tuple[str | None, Iterator[str]]:
    """The first non-blank line, and all the lines again (nothing consumed)."""
    it = iter(stream)
    seen: list[str] = []
    for line in it:
        seen.append(line)
        if line.strip():
            return line, itertools.chain(seen, it)
    return None, iter(seen)


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Rows as JSON lines (.jsonl, one object per line) or CSV (.csv, with a header). Default: JSON lines on stdin.",
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Input format (default: from the file extension).")
@click.option("--public-key", type=click.Path(dir_okay=False), help="Ed25519 public key (PEM); the signature must verify.")
@click.option("--strict", is_flag=True, help="Refuse unknown keys and categories never seen in training.")
@_buffer_options
def predict(bundle: str, input_path: str, fmt: str | None, public_key: str | None, strict: bool, buffer_path: Path | None,
            **buffer_options: Any) -> None:
    """Predict rows with BUNDLE and write one JSON result per line.

    Each output line is {"row": N, "prediction": ..., "probabilities": {...}, "flags": [...]}
    (no "probabilities" for regression). Probability keys are strings: a string label as
    is, any other label as its JSON text (1 -> "1", true -> "true"). A row that cannot be
    predicted gives {"row": N, "error": "..."} and the others go on; the exit status is
    then 1. Rows are numbered from 1 (JSON lines: non-blank lines; CSV: rows after the
    header). Exit status 3 means the bundle itself was refused.

    With --buffer FILE every prediction is also recorded in that telemetry buffer, as
    runtime.load(..., telemetry=telemetry.Buffer(FILE)) would; `edgepack sync --db FILE`
    sends it home.
    """
    import runtime

    given = {name: buffer_options.pop(name) for name in _BUFFER_OPTIONS}
    with _open_buffer(buffer_path, given) as buffer:
        try:
            model = runtime.load(bundle, public_key=public_key, require_signature=public_key is not None, strict=strict,
                                 telemetry=buffer)
        except runtime.EdgeError as exc:
            raise _fail(exc) from exc
        bad = _predict_rows(model, input_path, fmt)
        if buffer is not None:
            buffer.flush()
            lost = f"; {model.telemetry_errors} prediction(s) could not be recorded (see the log)" if model.telemetry_errors else ""
            click.echo(f"{buffer.pending()} prediction(s) in {buffer_path} waiting for `edgepack sync --db {buffer_path}`{lost}", err=True)
    if bad:
        click.echo(f"{bad} row(s) refused; see the error lines", err=True)
        sys.exit(EXIT_BAD_ROWS)


def _predict_rows(model: Any, input_path: str, fmt: str | None) -> int:
    """Write one JSON line per input row; returns how many rows were refused."""
    import runtime
    from runtime.records import csv_rows, json_lines, looks_like_csv_header

    explicit = fmt is not None
    if fmt is None:
        fmt = "csv" if input_path != "-" and Path(input_path).suffix.lower() == ".csv" else "jsonl"
    stream: TextIO
    if input_path == "-":
        stream = sys.stdin
    else:
        try:
            # utf-8-sig: spreadsheet exports often start with a byte-order mark.
            stream = open(input_path, encoding="utf-8-sig", newline="" if fmt == "csv" else None)  # noqa: SIM115
        except OSError as exc:
            raise click.BadParameter(f"cannot read {input_path!r}: {exc.strerror or exc}", param_hint="--input") from exc

    bad = 0
    try:
        lines: Iterable[str] = stream
        if fmt == "jsonl":
            first, lines = _first_line(stream)
            # CSV fed as JSON lines would give one "not valid JSON" per row and no clue.
            if first is not None and looks_like_csv_header(first, model.feature_names):
                where = "stdin" if input_path == "-" else repr(input_path)
                told = "--format jsonl was given, but " if explicit else ""
                raise click.UsageError(
                    f"{told}{where} looks like CSV, not JSON lines: its first line is the header "
                    f"{first.strip()[:80]!r}; pass --format csv (a file named *.csv is read as CSV)"
                )
        records = csv_rows(lines, model.inputs) if fmt == "csv" else json_lines(lines)
        for row, record in records:
            if isinstance(record, runtime.InputError):
                line, ok = json.dumps({"row": row, "error": record.reason}), False
            else:
                try:
                    line, ok = _json_result(row, model.predict(record)), True
                except runtime.EdgeError as exc:
                    line, ok = json.dumps({"row": row, "error": getattr(exc, "reason", str(exc))}), False
            bad += not ok
            click.echo(line)
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"input is not UTF-8 text: {exc}") from exc
    finally:
        if stream is not sys.stdin:
            stream.close()
    return bad


COMMANDS: list[click.Command] = [inspect, verify, predict]
