"""``build_bundle``: registry version -> converted, parity-checked, signed ``.edgepkg``."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runtime import bundle as bundle_format
from runtime.errors import EdgeError
from runtime.signing import KeySource, load_private_key

from . import registry
from .baseline import baseline
from .convert import columns_of, convert, is_classifier
from .converters import categories_by_column, check_supported, ranges_by_column
from .errors import SelfTestFailedError, UnsupportedModelError
from .golden import golden_record, golden_rows
from .missing_strings import bridge
from .manifest import Artifacts, input_entries, manifest
from .options import BuildOptions, BuildReport
from .parity import original_answers, parity_record, run_parity, tolerance_for
from .reference import read_reference, reference_frames, target_range_of
from .trees import threshold_probes


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

    clock = _Clock()
    if signing_key is not None:
        load_private_key(signing_key)  # a bad key fails now, not after the conversion
    with clock("resolve"):
        uri = registry.tracking_uri_from(tracking_uri)
        resolved = registry.resolve(model_uri, uri)
    if on_resolved is not None:
        on_resolved(resolved)
    with clock("load"), tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        local = registry.download(resolved, tmp)
        loaded = registry.load(local, allow_pickle=options.allow_pickle)
    with clock("parity"):
        if loaded.flavor == "sklearn":
            from threadpoolctl import threadpool_limits

            # One thread: scikit-learn's OpenMP predict (HistGradientBoosting: 300 trees) costs
            # ~7x more per call with a thread team than the few thousand rows the gate predicts.
            with threadpool_limits(limits=1):
                art = sklearn_artifacts(loaded, reference_data, options, clock=clock)
        else:
            from .onnx_flavor import from_onnx

            art = from_onnx(loaded, reference_data, options)

    written = write_artifacts(
        art, out, resolved, loaded.flavor, signing_key=signing_key, with_deps=with_deps, python_version=python_version, clock=clock
    )
    tagged = False
    if options.tag_registry:
        with clock("tag"):
            registry.tag_provenance(resolved, sha256=written.sha256, edgepack_version=__version__)
        tagged = True
    clock.seconds["parity"] = clock.seconds.get("parity", 0.0) - clock.seconds.get("convert", 0.0)
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
        phases={k: round(v, 4) for k, v in clock.seconds.items()},
    )


class _Clock:
    """Wall seconds per build phase (``with clock("load"): ...``; repeated phases add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began

    def timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self(phase):
                return fn(*args, **kwargs)

        return run


def write_artifacts(
    art: Artifacts,
    out: str | os.PathLike[str],
    resolved: registry.ResolvedModel,
    flavor: str,
    *,
    signing_key: KeySource | None = None,
    with_deps: Sequence[str] = (),
    python_version: str | None = None,
    clock: _Clock | None = None,
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
    clock = clock or _Clock()
    with clock("write"):
        written = bundle_format.write_bundle(out, manifest(resolved, flavor, art, __version__), files, signing_key=signing_key)
    with clock("self_test"):
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


# ---------------------------------------------------------------------------------------
# sklearn flavor


def _classes(model: Any) -> tuple[list[Any], list[Any]]:
    classes = model.classes_.tolist()
    # skl2onnx emits bool classes as int64 0/1 labels; everything else keeps its type.
    label_values = [int(c) if isinstance(c, bool) else c for c in classes]
    return classes, label_values


def _complete(frame: Any) -> Any:
    return frame[~frame.isna().any(axis=1)].reset_index(drop=True)


def with_missing_strings(entries: list[dict[str, Any]], missing: dict[str, str]) -> list[dict[str, Any]]:
    """Each nullable string feature records what its missing value goes in as (docs/bundle-format.md)."""
    for entry in entries:
        if entry["dtype"] == "string" and entry["nullable"]:
            entry["missing_string"] = missing.get(entry["name"], "")
    return entries


def sklearn_artifacts(loaded: registry.LoadedModel, reference_data: Any, options: BuildOptions, *, clock: _Clock | None = None) -> Artifacts:
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
    bridged = bridge(model, columns, base)
    outcome = run_parity(
        model,
        columns,
        base,
        classification=classification,
        classes=classes,
        label_values=label_values,
        tol=tol,
        options=options,
        make=(clock or _Clock()).timed("convert", lambda precision: convert(bridged.model, columns, precision)),
        probes=lambda conv: threshold_probes(model, columns, _complete(base), converted=conv.onnx, limit=options.threshold_probe_rows),
        missing=bridged.missing,
        string_nulls=True,
    )
    answers = original_answers(model, _complete(base), classification)
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
        inputs=with_missing_strings(
            input_entries(
                columns, outcome.converted, outcome.nullable, categories=categories, ranges=ranges, real=real, observed=reference_data is not None
            ),
            bridged.missing,
        ),
        parity=parity_record(outcome, tol, classification),
        golden=golden_record(model, golden, columns, classification, tol),
        baseline=baseline(base, columns, predictions, classification=classification, bins=options.histogram_bins),
        producers={"skl2onnx": skl2onnx.__version__, "sklearn": sklearn.__version__},
        target_range=target_range,
    )
