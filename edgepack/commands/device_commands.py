"""Subcommands for the device: ``inspect``, ``verify`` and ``predict``.

They need only the device install (runtime/: onnxruntime, numpy, cryptography); the
runtime is imported inside each command so that ``edgepack --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
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
def predict(bundle: str, input_path: str, fmt: str | None, public_key: str | None, strict: bool) -> None:
    """Predict rows with BUNDLE and write one JSON result per line.

    Each output line is {"row": N, "prediction": ..., "probabilities": {...}, "flags": [...]}
    (no "probabilities" for regression). Probability keys are strings: a string label as
    is, any other label as its JSON text (1 -> "1", true -> "true"). A row that cannot be
    predicted gives {"row": N, "error": "..."} and the others go on; the exit status is
    then 1. Rows are numbered from 1 (JSON lines: non-blank lines; CSV: rows after the
    header). Exit status 3 means the bundle itself was refused.
    """
    import runtime
    from runtime.records import csv_rows, json_lines

    try:
        model = runtime.load(bundle, public_key=public_key, require_signature=public_key is not None, strict=strict)
    except runtime.EdgeError as exc:
        raise _fail(exc) from exc

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
        records = csv_rows(stream, model.inputs) if fmt == "csv" else json_lines(stream)
        for row, record in records:
            if isinstance(record, runtime.InputError):
                line, ok = json.dumps({"row": row, "error": record.reason}), False
            else:
                try:
                    line, ok = _json_result(row, model.predict(record)), True  # type: ignore[arg-type]
                except runtime.EdgeError as exc:
                    line, ok = json.dumps({"row": row, "error": getattr(exc, "reason", str(exc))}), False
            bad += not ok
            click.echo(line)
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"input is not UTF-8 text: {exc}") from exc
    finally:
        if stream is not sys.stdin:
            stream.close()
    if bad:
        click.echo(f"{bad} row(s) refused; see the error lines", err=True)
        sys.exit(EXIT_BAD_ROWS)


COMMANDS: list[click.Command] = [inspect, verify, predict]
