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
from .errors import SelfTestFailedError
from .manifest import Artifacts, manifest
from .options import BuildOptions, BuildReport
from .phases import Clock


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

    clock = Clock()
    if signing_key is not None:
        load_private_key(signing_key)  # a bad key fails now, not after the conversion
    with clock("resolve"):
        uri = registry.tracking_uri_from(tracking_uri)
        resolved = registry.resolve(model_uri, uri)
    if on_resolved is not None:
        on_resolved(resolved)
    with clock("load"), tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        local = registry.download(resolved, tmp)
        loaded = registry.load(local, trust_pickle=options.trust_pickle, trusted_types=options.trusted_types)
    with clock("parity"):
        if loaded.flavor in ("sklearn", "xgboost", "lightgbm"):
            from threadpoolctl import threadpool_limits

            from .artifacts import sklearn_artifacts

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
    tagged, tags = False, {}
    if options.tag_registry:
        with clock("tag"):
            tags = registry.tag_provenance(resolved, sha256=written.sha256, edgepack_version=__version__)
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
        warnings=reference_warnings(art.inputs, reference_given=reference_data is not None, synth_rows=options.synth_rows),
        registry_tags=tags,
        signed=written.signature is not None,
        files=tuple(sorted(written.files)),
        tagged=tagged,
        converters=tuple(art.converters),
        label_only=art.label_only,
        phases={k: round(v, 4) for k, v in clock.seconds.items()},
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
    clock: Clock | None = None,
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
    clock = clock or Clock()
    with clock("write"):
        written = bundle_format.write_bundle(out, manifest(resolved, flavor, art, __version__), files, signing_key=signing_key)
    with clock("self_test"):
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
