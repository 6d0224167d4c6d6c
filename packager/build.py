"""``build_bundle``: registry version -> converted, parity-checked, signed ``.edgepkg``."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import bundle as bundle_format
from runtime.errors import EdgeError
from runtime.signing import KeySource

from . import registry
from .baseline import baseline
from .convert import Column, Converted, columns_of, convert, is_classifier
from .converters import categories_by_column, check_supported, ranges_by_column
from .errors import ConversionError, ParityError, ReferenceDataError, SelfTestFailedError, UnsupportedModelError
from .options import BuildOptions, BuildReport
from .parity import (
    Answers,
    Tolerance,
    check_original_runs,
    compare,
    describe_failure,
    onnx_answers,
    original_answers,
    session,
)
from .reference import read_reference, select, synthesize, target_range_of, with_missing


@dataclass
class Artifacts:
    """Everything the sklearn or onnx path hands to the bundle writer."""

    onnx_bytes: bytes
    converted: Converted
    columns: list[Column]
    classification: bool
    classes: list[Any] | None
    label_values: list[Any] | None
    estimator: str
    inputs: list[dict[str, Any]]
    parity: dict[str, Any]
    golden: dict[str, Any]
    baseline: dict[str, Any]
    producers: dict[str, str]
    target_range: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_bundle(
    model_uri: str,
    out: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    reference_data: Any = None,
    signing_key: KeySource | None = None,
    with_deps: Sequence[str] = (),
    python_version: str | None = None,
    options: BuildOptions = BuildOptions(),
    on_resolved: Callable[[registry.ResolvedModel], None] | None = None,
) -> BuildReport:
    """Build a bundle from ``model_uri`` (``models:/NAME/STAGE``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``).

    The URI is resolved once to a concrete version; everything after uses that version, so an
    alias moved during the build cannot mix two versions (``on_resolved`` is called right after
    resolution). ``reference_data`` is a DataFrame or a CSV/Parquet path; without it the
    logged input example plus synthesised rows are used. The bundle is written only when the
    ONNX model passes parity with the original.
    """
    from edgepack import __version__

    uri = registry.tracking_uri_from(tracking_uri)
    resolved = registry.resolve(model_uri, uri)
    if on_resolved is not None:
        on_resolved(resolved)
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        local = registry.download(resolved, tmp)
        loaded = registry.load(local, allow_pickle=options.allow_pickle)
    if loaded.flavor == "sklearn":
        art = sklearn_artifacts(loaded, reference_data, options)
    else:
        from .onnx_flavor import from_onnx

        art = from_onnx(loaded, reference_data, options)

    written = write_artifacts(
        art, out, resolved, loaded.flavor, signing_key=signing_key, with_deps=with_deps, python_version=python_version
    )
    tagged = False
    if options.tag_registry:
        registry.tag_provenance(resolved, sha256=written.sha256, edgepack_version=__version__)
        tagged = True
    return BuildReport(
        path=str(written.path),
        sha256=written.sha256,
        size=written.size,
        model_name=resolved.name,
        model_version=resolved.version,
        requested_uri=resolved.requested_uri,
        resolved={"kind": resolved.kind, "value": resolved.value},
        flavor=loaded.flavor,
        task="classification" if art.classification else "regression",
        precision=art.converted.precision,
        parity=art.parity,
        signed=written.signature is not None,
        files=tuple(sorted(written.files)),
        tagged=tagged,
    )


def write_artifacts(
    art: Artifacts,
    out: str | os.PathLike[str],
    resolved: registry.ResolvedModel,
    flavor: str,
    *,
    signing_key: KeySource | None = None,
    with_deps: Sequence[str] = (),
    python_version: str | None = None,
) -> bundle_format.Bundle:
    """Write the bundle for converted, parity-checked artifacts, then load it as a device would."""
    from edgepack import __version__

    requirements = requirements_txt()
    files: dict[str, bytes] = {
        bundle_format.MODEL: art.onnx_bytes,
        bundle_format.GOLDEN: bundle_format.canonical_json(art.golden),
        bundle_format.REQUIREMENTS: requirements.encode(),
    }
    if with_deps:
        from .wheels import device_wheels

        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        files.update(device_wheels(list(with_deps), version, requirements.splitlines()))
    manifest = _manifest(resolved, flavor, art, __version__)
    written = bundle_format.write_bundle(out, manifest, files, signing_key=signing_key)
    _self_test(written.path or os.fspath(out))
    return written


def _self_test(path: str) -> None:
    """Load the bundle as a device would (hashes, manifest, golden self-test); remove it if that fails."""
    import runtime

    try:
        runtime.load(path)
    except EdgeError as exc:
        Path(path).unlink(missing_ok=True)
        raise SelfTestFailedError(
            f"the bundle was written but fails to load on the device side ({exc}); it was removed"
        ) from exc


def requirements_txt() -> str:
    """onnxruntime pinned to the version that ran parity, a numpy range, the other device deps."""
    from importlib.metadata import PackageNotFoundError, requires

    import numpy
    import onnxruntime

    lines = [f"onnxruntime=={onnxruntime.__version__}", f"numpy>=1.24,<{int(numpy.__version__.split('.')[0]) + 1}"]
    try:
        declared = requires("edgepack") or []
    except PackageNotFoundError:
        declared = []
    for req in declared:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
        if name not in ("onnxruntime", "numpy"):
            lines.append(req.replace(" ", ""))
    return "\n".join(lines) + "\n"


def tolerance_for(classification: bool, options: BuildOptions) -> Tolerance:
    default_abs = 1e-4 if classification else 1e-6
    return Tolerance(
        abs=options.abs_tolerance if options.abs_tolerance is not None else default_abs,
        rel=options.rel_tolerance if options.rel_tolerance is not None else 1e-4,
    )


def _manifest(resolved: registry.ResolvedModel, flavor: str, art: Artifacts, version: str) -> dict[str, Any]:
    import onnx

    onx = art.converted.onnx
    conv = art.converted
    if art.classification:
        outputs = {
            "task": "classification",
            "classes": art.classes,
            "label": conv.outputs[0],
            "label_values": art.label_values,
            "probabilities": conv.outputs[1],
            "prediction": None,
            "target_range": None,
        }
    else:
        outputs = {
            "task": "regression",
            "classes": None,
            "label": None,
            "label_values": None,
            "probabilities": None,
            "prediction": conv.outputs[0],
            "target_range": art.target_range,
        }
    return {
        "edgepack_version": version,
        "model": {
            "name": resolved.name,
            "version": resolved.version,
            "run_id": resolved.run_id,
            "requested_uri": resolved.requested_uri,
            "resolved": {"kind": resolved.kind, "value": resolved.value},
            "registry_uri": resolved.registry_uri,
            "flavor": flavor,
            "created_at": resolved.created_at,
            "estimator": art.estimator,
        },
        "inputs": art.inputs,
        "onnx_inputs": conv.onnx_inputs,
        "outputs": outputs,
        "onnx": {
            "opsets": {imp.domain: int(imp.version) for imp in onx.opset_import},
            "ir_version": int(onx.ir_version),
            "precision": conv.precision,
            "producers": {**art.producers, "onnx": onnx.__version__},
        },
        "parity": art.parity,
        "baseline": art.baseline,
    }


# ---------------------------------------------------------------------------------------
# sklearn flavor


def _classes(model: Any) -> tuple[list[Any], list[Any]]:
    classes = model.classes_.tolist()
    # skl2onnx emits bool classes as int64 0/1 labels; everything else keeps its type.
    label_values = [int(c) if isinstance(c, bool) else c for c in classes]
    return classes, label_values


def reference_frames(
    reference_data: Any, example: Any, columns: list[Column], options: BuildOptions, *, categories: dict[str, list[Any]], ranges: dict[str, tuple[float, float]]
) -> tuple[Any, Any]:
    """``(base, real)``: all reference rows (real + synthesised) and the real ones alone."""
    import pandas as pd

    if reference_data is not None:
        frame = read_reference(reference_data, columns)
        if len(frame) > options.max_reference_rows:
            frame = frame.sample(n=options.max_reference_rows, random_state=options.seed).sort_index()
        real = select(frame, columns)
        return real, real
    if example is None:
        raise ReferenceDataError(
            "the model was logged without an input example, so there is nothing to test parity on; "
            "pass --reference-data FILE (CSV or Parquet with the model's columns)"
        )
    missing = [c.name for c in columns if c.name not in example.columns]
    if missing:
        raise ReferenceDataError(f"the logged input example lacks the model's columns {missing}; pass --reference-data")
    real = select(example, columns)
    synth = synthesize(real, columns, rows=options.synth_rows, seed=options.seed, categories=categories, ranges=ranges)
    base = pd.concat([real.astype(object), synth.astype(object)], ignore_index=True)
    for col in columns:
        if col.kind == "numeric":
            base[col.name] = pd.to_numeric(base[col.name])
    return base, real


@dataclass
class ParityOutcome:
    """The model that passed parity, and what the gate proved about it."""

    converted: Converted
    """The packed ONNX model that passed."""
    attempts: list[str]
    """Precisions tried, in order."""
    nullable: set[str]
    """Numeric features whose NaN the original takes and ONNX answers the same for."""
    rows: Any
    """Every row that was compared and passed (complete rows, then rows with NaN)."""
    rows_with_missing: int
    """How many of ``rows`` have NaN."""
    max_abs: float
    """Largest absolute difference over ``rows``."""
    max_rel: float
    """Largest relative difference over ``rows``."""


def run_parity(
    model: Any,
    columns: list[Column],
    base: Any,
    *,
    classification: bool,
    classes: list[Any] | None,
    label_values: list[Any] | None,
    tol: Tolerance,
    options: BuildOptions,
    make: Callable[[str], Converted],
) -> ParityOutcome:
    """Convert at each precision until one agrees with the original on every complete row,
    then find which numeric features provably take NaN."""
    import numpy as np
    import pandas as pd

    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    incomplete = base[base.isna().any(axis=1)].reset_index(drop=True)
    if complete.empty:
        raise ReferenceDataError("every reference row has a missing value; expected some complete rows")
    expected = check_original_runs(model, complete, classification)
    failures: list[str] = []
    worst: list[dict[str, Any]] = []
    attempts: list[str] = []
    chosen = None
    for precision in options.precisions:
        attempts.append(precision)
        try:
            conv = make(precision)
            sess = session(conv.onnx.SerializeToString())
            got = onnx_answers(sess, complete, columns, conv, classes, label_values)
            cmp = compare(expected, got, tol)
        except ConversionError as exc:
            failures.append(f"{precision}: {exc}")
            continue
        if bool(cmp.ok.all()):
            chosen = (conv, sess, cmp)
            break
        message, worst = describe_failure(precision, complete, expected, got, cmp, tol, options.worst_rows)
        failures.append(message)
    if chosen is None:
        lines = "\n".join(f"  {json.dumps(row, default=str)}" for row in worst)
        raise ParityError(
            "the ONNX model does not answer like the original; tried " + "; ".join(failures)
            + (f"\nworst rows:\n{lines}" if lines else ""),
            worst=worst,
        )
    conv, sess, cmp = chosen

    def passes(frame: Any) -> Any:
        """The comparison on ``frame`` when the original takes its NaN and ONNX agrees, else None."""
        try:
            exp = original_answers(model, frame, classification)
        except ValueError:  # sklearn refuses NaN for this model
            return None
        if np.isnan(exp.values()).any():
            return None
        result = compare(exp, onnx_answers(sess, frame, columns, conv, classes, label_values), tol)
        return result if bool(result.ok.all()) else None

    def gaps_of(frame: Any) -> set[str]:
        return {c for c in frame.columns if frame[c].isna().any()}

    nullable: set[str] = set()
    passed: list[tuple[Any, Any]] = []
    for col in columns:
        if col.kind != "numeric":
            continue
        probe = with_missing(complete, col.name, options.nan_probe_rows)
        if (result := passes(probe)) is not None:
            nullable.add(col.name)
            passed.append((probe, result))
    for i in range(len(incomplete)):
        row = incomplete.iloc[[i]].reset_index(drop=True)
        if not gaps_of(row) <= nullable:
            continue
        if (result := passes(row)) is not None:
            passed.append((row, result))
        else:
            # A real row with NaN disagrees: refuse NaN for those features on the device
            # rather than answer differently from the original.
            nullable -= gaps_of(row)
    passed = [(frame, result) for frame, result in passed if gaps_of(frame) <= nullable]
    max_abs = max([float(cmp.abs_diff.max())] + [float(r.abs_diff.max()) for _, r in passed])
    max_rel = max([float(cmp.rel_diff.max())] + [float(r.rel_diff.max()) for _, r in passed])
    missing_rows = pd.concat([f for f, _ in passed], ignore_index=True) if passed else complete.iloc[0:0]
    rows = pd.concat([complete.astype(object), missing_rows.astype(object)], ignore_index=True)
    for col in columns:
        if col.kind == "numeric":
            rows[col.name] = pd.to_numeric(rows[col.name])
    return ParityOutcome(
        converted=conv,
        attempts=attempts,
        nullable=nullable,
        rows=rows,
        rows_with_missing=len(missing_rows),
        max_abs=max_abs,
        max_rel=max_rel,
    )


def parity_record(outcome: ParityOutcome, tol: Tolerance, classification: bool) -> dict[str, Any]:
    import onnxruntime

    return {
        "rows": len(outcome.rows),
        "rows_with_missing": outcome.rows_with_missing,
        "label_agreement": 1.0 if classification else None,
        "max_abs_diff": outcome.max_abs,
        "max_rel_diff": outcome.max_rel,
        "tolerance": tol.as_dict(),
        "precision": outcome.converted.precision,
        "attempts": outcome.attempts,
        "onnxruntime": onnxruntime.__version__,
    }


def golden_rows(rows: Any, columns: list[Column], nullable: set[str], count: int) -> Any:
    """Edge rows first (min and max of each numeric feature, NaN for each nullable one), then
    the first rows, up to ``count``."""
    picked: list[int] = []

    def add(i: int) -> None:
        if i not in picked and len(picked) < count:
            picked.append(int(i))

    numeric = [c.name for c in columns if c.kind == "numeric"]
    for name in numeric:
        values = rows[name]
        if name in nullable and values.isna().any():
            add(int(values.isna().to_numpy().nonzero()[0][0]))
    for name in numeric:
        values = rows[name]
        if values.notna().any():
            add(int(values.idxmin()))
            add(int(values.idxmax()))
    for i in range(len(rows)):
        add(i)
    return rows.iloc[sorted(picked)].reset_index(drop=True)


def _json_value(value: Any) -> Any:
    import math

    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def golden_record(model: Any, frame: Any, columns: list[Column], classification: bool, tol: Tolerance, answers: Answers | None = None) -> dict[str, Any]:
    answers = answers if answers is not None else original_answers(model, frame, classification)
    inputs = {c.name: [_json_value(v) for v in frame[c.name].tolist()] for c in columns}
    if classification:
        outputs = {
            "label": [_json_value(v) for v in answers.labels.tolist()],
            "probabilities": [[float(p) for p in row] for row in answers.probabilities],
            "prediction": None,
        }
    else:
        outputs = {"label": None, "probabilities": None, "prediction": [float(v) for v in answers.prediction]}
    return {"inputs": inputs, "outputs": outputs, "tolerance": tol.as_dict()}


def input_entries(
    columns: list[Column], conv: Converted, nullable: set[str], *, categories: dict[str, list[Any]], ranges: dict[str, tuple[float, float]], real: Any, observed: bool
) -> list[dict[str, Any]]:
    """The manifest's ``inputs``; ``observed`` says ``real`` is user reference data (its min/max and values count)."""
    entries = []
    for col in columns:
        slot = conv.slots[col.name]
        rng: list[float] | None = None
        cats: list[Any] | None = None
        if col.kind == "numeric":
            if col.name in ranges:
                rng = list(ranges[col.name])
            elif observed and real[col.name].notna().any():
                rng = [float(real[col.name].min()), float(real[col.name].max())]
        else:
            if col.name in categories:
                cats = [_json_value(v) for v in categories[col.name]]
            elif observed:
                cats = sorted({str(v) for v in real[col.name].dropna().tolist()})
        entries.append(
            {
                "name": col.name,
                "onnx_input": slot.onnx_input,
                "slot": slot.slot,
                "dtype": slot.dtype,
                "kind": col.kind,
                "nullable": col.name in nullable,
                "range": rng,
                "categories": cats,
            }
        )
    return entries


def sklearn_artifacts(loaded: registry.LoadedModel, reference_data: Any, options: BuildOptions) -> Artifacts:
    import sklearn
    import skl2onnx

    model = loaded.model
    check_supported(model)
    classification = is_classifier(model)
    classes = label_values = None
    if classification:
        if not hasattr(model, "predict_proba"):
            raise UnsupportedModelError(
                f"{type(model).__name__} has no predict_proba; edgepack ships classifiers with probabilities",
                cls=type(model).__name__,
            )
        classes, label_values = _classes(model)
    if reference_data is not None:
        reference_data = read_reference(reference_data, [])  # once: a path becomes a DataFrame
    columns = columns_of(model, loaded.signature_columns, reference_data if reference_data is not None else loaded.input_example)
    categories = categories_by_column(model)
    ranges = ranges_by_column(model)
    base, real = reference_frames(reference_data, loaded.input_example, columns, options, categories=categories, ranges=ranges)
    tol = tolerance_for(classification, options)
    outcome = run_parity(
        model,
        columns,
        base,
        classification=classification,
        classes=classes,
        label_values=label_values,
        tol=tol,
        options=options,
        make=lambda precision: convert(model, columns, precision),
    )
    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    answers = original_answers(model, complete, classification)
    predictions = answers.labels if classification else answers.prediction
    golden = golden_rows(outcome.rows, columns, outcome.nullable, options.golden_rows)
    target_range = None
    if options.target_column is not None and not classification:
        target_range = target_range_of(reference_data, options.target_column)
    return Artifacts(
        onnx_bytes=outcome.converted.onnx.SerializeToString(),
        converted=outcome.converted,
        columns=columns,
        classification=classification,
        classes=classes,
        label_values=label_values,
        estimator=type(model).__name__,
        inputs=input_entries(
            columns, outcome.converted, outcome.nullable, categories=categories, ranges=ranges, real=real, observed=reference_data is not None
        ),
        parity=parity_record(outcome, tol, classification),
        golden=golden_record(model, golden, columns, classification, tol),
        baseline=baseline(base, columns, predictions, classification=classification, bins=options.histogram_bins),
        producers={"skl2onnx": skl2onnx.__version__, "sklearn": sklearn.__version__},
        target_range=target_range,
    )
