"""``build_bundle``: registry version -> converted, parity-checked, signed ``.edgepkg``."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime import bundle as bundle_format
from runtime.errors import EdgeError
from runtime.signing import KeySource, load_private_key

from . import registry
from .baseline import baseline
from .convert import columns_of, convert, drop_placeholder, is_classifier, label_only
from .converters import categories_by_column, check_supported, ranges_by_column
from .errors import ConversionError, ParityError, SelfTestFailedError
from .golden import golden_record, golden_rows
from .manifest import Artifacts, input_entries, manifest
from .options import BuildOptions, BuildReport
from .parity import original_answers, parity_record, run_parity, tolerance_for
from .reference import read_reference, reference_frames, target_range_of


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

    if signing_key is not None:
        load_private_key(signing_key)  # a bad key fails now, not after the conversion
    uri = registry.tracking_uri_from(tracking_uri)
    resolved = registry.resolve(model_uri, uri)
    if on_resolved is not None:
        on_resolved(resolved)
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        local = registry.download(resolved, tmp)
        loaded = registry.load(local, trust_pickle=options.trust_pickle, trusted_types=options.trusted_types)
    if loaded.flavor in ("sklearn", "xgboost", "lightgbm"):
        art = sklearn_artifacts(loaded, reference_data, options)
    else:
        from .onnx_flavor import from_onnx

        art = from_onnx(loaded, reference_data, options)

    written = write_artifacts(
        art, out, resolved, loaded.flavor, signing_key=signing_key, with_deps=with_deps, python_version=python_version
    )
    tagged, tags = False, {}
    if options.tag_registry:
        tags = registry.tag_provenance(resolved, sha256=written.sha256, edgepack_version=__version__)
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
        warnings=reference_warnings(art.inputs, reference_given=reference_data is not None, synth_rows=options.synth_rows),
        registry_tags=tags,
        signed=written.signature is not None,
        files=tuple(sorted(written.files)),
        tagged=tagged,
        converters=tuple(art.converters),
        label_only=art.label_only,
    )


def reference_warnings(inputs: Sequence[dict[str, Any]], *, reference_given: bool, synth_rows: int) -> tuple[str, ...]:
    """What the bundle's guardrails lack, from its manifest ``inputs``, for the build report."""
    hint = "pass --reference-data with rows like the training data" if not reference_given else "the reference data holds no values there"
    found = []
    unranged = [entry["name"] for entry in inputs if entry.get("kind") == "numeric" and entry.get("range") is None]
    if unranged:
        found.append(
            f"no training range for numeric feature(s) {', '.join(unranged)}: the device never flags out_of_range "
            f"for them ({hint})"
        )
    uncategorised = [entry["name"] for entry in inputs if entry.get("kind") != "numeric" and entry.get("categories") is None]
    if uncategorised:
        found.append(
            f"no known categories for feature(s) {', '.join(uncategorised)}: the device never flags unseen_category "
            f"for them ({hint})"
        )
    if not reference_given:
        found.append(
            f"no reference data: the parity gate and the drift baseline used the logged input example plus {synth_rows} "
            "synthesised rows, so drift is measured against made-up data (pass --reference-data)"
        )
    return tuple(found)


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
    written = bundle_format.write_bundle(out, manifest(resolved, flavor, art, __version__), files, signing_key=signing_key)
    _self_test(written.path or os.fspath(out))
    return written


def _self_test(path: str) -> None:
    """Load the bundle as a device would (hashes, manifest, golden self-test); remove it if that fails."""
    from runtime.model import EdgeModel

    try:
        # Not runtime.load: it warns that the signature was not checked, and this process wrote it.
        EdgeModel(bundle_format.read_bundle(path))
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


# ---------------------------------------------------------------------------------------
# sklearn flavor


def _classes(model: Any) -> tuple[list[Any], list[Any]]:
    classes = model.classes_.tolist()
    # skl2onnx emits bool classes as int64 0/1 labels; everything else keeps its type.
    label_values = [int(c) if isinstance(c, bool) else c for c in classes]
    return classes, label_values


def sklearn_artifacts(loaded: registry.LoadedModel, reference_data: Any, options: BuildOptions) -> Artifacts:
    import sklearn
    import skl2onnx

    model = loaded.model
    handled = check_supported(model)
    classification = is_classifier(model)
    classes = label_values = None
    labels_only = classification and label_only(model)
    original = model
    if classification:
        classes, label_values = _classes(model)
        if labels_only:
            model = LabelsOnly(model)
    if reference_data is not None:
        reference_data = read_reference(reference_data, [])  # once: a path becomes a DataFrame
    columns = columns_of(original, loaded.signature_columns, reference_data if reference_data is not None else loaded.input_example)
    categories = categories_by_column(original)
    ranges = ranges_by_column(original)
    base, real = reference_frames(reference_data, loaded.input_example, columns, options, categories=categories, ranges=ranges)
    tol = tolerance_for(classification, options)
    # Convert before the gate: when no precision gives a graph that converts and runs, that
    # is a ConversionError of its own, not one of the gate's attempts (which would report
    # it as a parity failure). The first precision that works is handed to the gate as is.
    converted: dict[str, Any] = {}
    errors: list[ConversionError] = []
    for precision in options.precisions:
        try:
            candidate = convert(original, columns, precision)
            runnable(candidate, original, columns, base)
        except ConversionError as exc:
            errors.append(exc)
            continue
        converted[precision] = candidate
        break
    if not converted:
        raise errors[0]
    try:
        outcome = run_parity(
            model,
            columns,
            base,
            classification=classification,
            classes=classes,
            label_values=label_values,
            tol=tol,
            options=options,
            make=lambda precision: converted.get(precision) or convert(original, columns, precision),
        )
    except ParityError as exc:
        # Name the model the gate refused, as every refusal names its step.
        cls = type(original)
        raise ParityError(f"the model ({cls.__module__}.{cls.__name__}): {exc}", worst=exc.worst) from exc
    if labels_only:
        drop_placeholder(outcome.converted.onnx)
    golden_set = golden_record(model, golden_rows(outcome.rows, columns, outcome.nullable, options.golden_rows), columns, classification, tol)
    if labels_only:
        golden_set["outputs"]["probabilities"] = None
    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    answers = original_answers(model, complete, classification)
    predictions = answers.labels if classification else answers.prediction
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
        estimator=type(original).__name__,
        inputs=input_entries(
            columns, outcome.converted, outcome.nullable, categories=categories, ranges=ranges, real=real, observed=reference_data is not None
        ),
        parity=parity_record(outcome, tol, classification),
        golden=golden_set,
        baseline=baseline(base, columns, predictions, classification=classification, bins=options.histogram_bins),
        producers=_producers(skl2onnx.__version__, sklearn.__version__, handled),
        target_range=target_range,
        converters=[h.as_dict() for h in handled],
        label_only=labels_only,
    )


def runnable(converted: Any, model: Any, columns: Sequence[Any], base: Any) -> None:
    """onnxruntime must load what the converter produced and run it on the complete
    reference rows; a graph it rejects or cannot run is a converter failure
    (``ConversionError``), not a disagreement for the parity gate to report."""
    import onnxruntime as ort

    from .convert import conversion_error
    from .parity import feeds

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    try:
        sess = ort.InferenceSession(converted.onnx.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        if len(complete):
            sess.run(None, feeds(complete, columns, converted))
    except Exception as exc:  # onnxruntime's pybind errors have no common base
        raise conversion_error(
            model, converted.precision, exc, failed="converts to an ONNX graph that onnxruntime cannot load or run on the reference rows"
        ) from exc


class LabelsOnly:
    """The original side of the gate for a classifier without ``predict_proba``: its labels,
    and zero probability columns (the ONNX side's placeholder has zero columns too)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict(self, frame: Any) -> Any:
        return self.model.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        import numpy as np

        return np.zeros((len(frame), 0))


def _producers(skl2onnx_version: str, sklearn_version: str, handled: Sequence[Any]) -> dict[str, str]:
    """Versions of the converters and libraries that produced the graph."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"skl2onnx": skl2onnx_version, "sklearn": sklearn_version}
    libraries = {h.converter.split(":", 1)[0] for h in handled} | {h.estimator.split(".", 1)[0] for h in handled}
    for name in sorted(libraries & {"onnxmltools", "xgboost", "lightgbm"}):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
