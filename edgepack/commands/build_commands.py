"""Subcommands of the build side: ``edgepack build`` and ``edgepack keygen``.

The packager (and with it mlflow, sklearn, skl2onnx) is imported inside the command, so
``edgepack --help`` works on a device install without the build extra.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runtime.errors import EdgeError

if TYPE_CHECKING:
    from packager import BuildReport

EXIT_ERROR = 1
EXIT_PARITY = 3
EXIT_REGISTRY = 4
EXIT_MODEL = 5
EXIT_REFERENCE = 6
EXIT_CONVERSION = 7

EXIT_CODES_EPILOG = """\b
Exit codes:
  0  built: parity passed, bundle written and self-tested, registry version tagged
  1  other error (bad option, bad key, existing -o without --force, missing extra, self-test)
  2  usage error
  3  parity: the converted model answers differently from the original
  4  registry: cannot reach it, or no such model, alias, stage or version
  5  model: its artifacts cannot be loaded (flavor, skops trust, pickle)
  6  reference data: unreadable, or does not match the model's inputs
  7  conversion: a step has no converter, is known to convert wrongly,
     or the converter failed; the message names the step"""


def _exit_code(exc: EdgeError) -> int:
    from packager import errors

    if isinstance(exc, errors.ParityError):
        return EXIT_PARITY
    if isinstance(exc, errors.RegistryError):
        return EXIT_REGISTRY
    if isinstance(exc, (errors.UnsupportedModelError, errors.ConversionError)):
        return EXIT_CONVERSION
    if isinstance(exc, errors.ModelLoadError):
        return EXIT_MODEL
    if isinstance(exc, errors.ReferenceDataError):
        return EXIT_REFERENCE
    return EXIT_ERROR


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _tagged(r: BuildReport) -> str:
    if not r.tagged:
        return "tagged  nothing (--no-tag)"
    tags = ", ".join(f"{key}={value[:12]}…" if len(value) > 12 else f"{key}={value}" for key, value in r.registry_tags.items())
    return f"tagged  {r.model_name} version {r.model_version} in the registry: {tags}"


def _describe_existing(path: Path) -> str:
    try:
        from runtime.bundle import read_bundle

        model = read_bundle(path).manifest["model"]
        return f" (a bundle of {model['name']} version {model['version']})"
    except Exception:  # noqa: BLE001 - only describes the file the message is about
        return ""


def _summary(r: BuildReport) -> str:
    parity = r.parity
    agreement = parity.get("label_agreement")
    lines = [
        f"built   {r.path}",
        f"model   {r.model_name} version {r.model_version} ({r.resolved['kind']} {r.resolved['value']}, {r.flavor}, {r.task})",
        f"parity  {parity['rows']} rows ({parity['rows_with_missing']} with missing values), "
        + (f"labels agree {agreement:.0%}, " if agreement is not None else "")
        + f"max abs diff {parity['max_abs_diff']:.2g}, {parity['precision']}, onnxruntime {parity['onnxruntime']}",
        f"size    {r.size} bytes, sha256 {r.sha256}" + (", signed" if r.signed else ""),
        _tagged(r),
        *(f"warning {warning}" for warning in r.warnings),
    ]
    if r.converters:
        steps = ", ".join(f"{c['step'] or 'model'} -> {c['converter']}" for c in r.converters)
        lines.insert(2, f"convert {steps}" + (" (label-only: no probabilities)" if r.label_only else ""))
    return "\n".join(lines)


@click.command("build", epilog=EXIT_CODES_EPILOG)
@click.argument("model_uri")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the .edgepkg.")
@click.option("--force", is_flag=True, help="Replace the file at -o if it exists (default: refuse).")
@click.option("--tracking-uri", help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option(
    "--reference-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or Parquet rows for the parity gate and the drift baseline (default: the logged input example plus synthesised rows).",
)
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Ed25519 private key (PEM) to sign the manifest with.")
@click.option("--with-deps", "with_deps", multiple=True, metavar="PLATFORM", help="Add device wheels for PLATFORM (repeatable).")
@click.option("--python-version", help="Python version of the device wheels, X.Y (default: this interpreter's).")
@click.option("--abs-tol", type=float, help="Parity: absolute tolerance (default 1e-4 classification, 1e-6 regression).")
@click.option("--rel-tol", type=float, help="Parity: relative tolerance (default 1e-4).")
@click.option("--target-column", help="Regression: reference-data column with the true target, for the target range.")
@click.option("--no-tag", is_flag=True, help="Do not tag the registry version with the bundle's sha256.")
@click.option(
    "--keep-string-encoding",
    is_flag=True,
    help="Keep the one-hot encoding of string features in the graph instead of letting the device encode them "
    "(slower; for devices whose runtime predates inputs[].encoding, which refuses such bundles).",
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Load a model saved as pickle/cloudpickle. Unpickling runs any code the file holds, here, next to the "
    "signing key: only if everyone who can register a model version may do that.",
)
@click.option(
    "--trust-type",
    "trust_types",
    multiple=True,
    metavar="TYPE",
    help="A type a skops model may hold beyond what skops trusts (repeatable). The list logged with the model is ignored.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def build(
    model_uri: str,
    out: Path,
    force: bool,
    tracking_uri: str | None,
    reference_data: Path | None,
    sign_key: Path | None,
    with_deps: tuple[str, ...],
    python_version: str | None,
    abs_tol: float | None,
    rel_tol: float | None,
    target_column: str | None,
    no_tag: bool,
    keep_string_encoding: bool,
    trust_pickle: bool,
    trust_types: tuple[str, ...],
    as_json: bool,
) -> None:
    """Build a verified bundle from MODEL_URI (models:/NAME/STAGE, models:/NAME@ALIAS or models:/NAME/VERSION).

    Without --reference-data the parity gate and the drift baseline use the logged input
    example plus synthesised rows, and numeric features get no training range (so the
    device never flags out_of_range): the report warns about each.
    """
    # A bundle on disk may be what devices run: replacing it takes a decision (--force),
    # made before minutes of conversion, not after.
    if out.exists() and not force:
        _fail(
            f"{out} already exists{_describe_existing(out)}; pass --force to replace it, or choose another -o",
            EXIT_ERROR,
        )
    try:
        from packager import DEFAULT_TRUSTED_TYPES, BuildOptions, build_bundle
    except EdgeError as exc:  # the packager extra is missing
        _fail(str(exc), EXIT_ERROR)
    try:
        options = BuildOptions(
            abs_tolerance=abs_tol,
            rel_tolerance=rel_tol,
            target_column=target_column,
            tag_registry=not no_tag,
            encode_strings=not keep_string_encoding,
            trust_pickle=trust_pickle,
            trusted_types=DEFAULT_TRUSTED_TYPES + tuple(t for t in trust_types if t not in DEFAULT_TRUSTED_TYPES),
        )
        report = build_bundle(
            model_uri,
            out,
            tracking_uri=tracking_uri,
            reference_data=reference_data,
            signing_key=sign_key,
            with_deps=with_deps,
            python_version=python_version,
            options=options,
        )
    except EdgeError as exc:
        _fail(str(exc), _exit_code(exc))
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
    else:
        click.echo(_summary(report))


@click.command("keygen")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing pair in DIRECTORY (devices trusting the old edge.pub will refuse new bundles).")
def keygen(directory: Path, force: bool) -> None:
    """Write a new Ed25519 key pair (edge.pem, private; edge.pub, public) into DIRECTORY.

    Refuses to replace an existing edge.pem unless --force: devices trust its public half.
    """
    from runtime.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, generate_keypair

    existing = directory / PRIVATE_KEY_NAME
    if existing.exists() and not force:
        _fail(
            f"{existing} already exists: {directory} holds a signing key, and devices that trust its "
            f"{directory / PUBLIC_KEY_NAME} would refuse bundles signed with a new one; keep signing with it "
            f"(edgepack build ... --sign-key {existing}), write a new pair elsewhere (edgepack keygen OTHER_DIR), "
            "or replace it with --force",
            EXIT_ERROR,
        )
    try:
        if existing.exists():
            private, public = _replace_keypair(directory, generate_keypair)
        else:
            private, public = generate_keypair(directory)
    except EdgeError as exc:
        _fail(str(exc), EXIT_ERROR)
    except OSError as exc:
        _fail(f"cannot write keys into {directory}: {exc.strerror or exc}", EXIT_ERROR)
    click.echo(f"private key {private} (keep it secret; sign with: edgepack build ... --sign-key {private})")
    click.echo(f"public key  {public} (ship it to devices; verify with: edgepack verify BUNDLE --public-key {public})")


def _replace_keypair(directory: Path, generate: Callable[[Path], tuple[Path, Path]]) -> tuple[Path, Path]:
    """--force: make the new pair next to the old one, then move it over it (never no key at all)."""
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keygen-") as tmp:
        new_private, new_public = generate(Path(tmp))
        private, public = directory / new_private.name, directory / new_public.name
        # The private key first: a public key can be derived from it again, not the reverse.
        os.replace(new_private, private)
        os.replace(new_public, public)
    return private, public


COMMANDS: list[click.Command] = [build, keygen]
