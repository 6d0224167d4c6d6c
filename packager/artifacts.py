"""The artifacts of a scikit-learn-API model (scikit-learn, and XGBoost/LightGBM through
their estimators): conversion, the parity gate, golden rows, baseline and manifest inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import registry
from .baseline import baseline
from .convert import columns_of, convert, is_classifier, label_only
from .graph_edits import drop_placeholder
from .converters import categories_by_column, check_supported, ranges_by_column
from .errors import ConversionError, ParityError
from .golden import golden_record, golden_rows
from .manifest import Artifacts, input_entries
from .missing_strings import bridge
from .options import BuildOptions
from .phases import Clock
from .parity import original_answers, parity_record, run_parity, tolerance_for
from .reference import read_reference, reference_frames, target_range_of
from .trees import threshold_probes



def _complete(frame: Any) -> Any:
    return frame[~frame.isna().any(axis=1)].reset_index(drop=True)


def with_missing_strings(entries: list[dict[str, Any]], missing: dict[str, str]) -> list[dict[str, Any]]:
    """Each nullable string feature records what its missing value goes in as (docs/bundle-format.md)."""
    for entry in entries:
        if entry["dtype"] == "string" and entry["nullable"]:
            entry["missing_string"] = missing.get(entry["name"], "")
    return entries


def _classes(model: Any) -> tuple[list[Any], list[Any]]:
    classes = model.classes_.tolist()
    # skl2onnx emits bool classes as int64 0/1 labels; everything else keeps its type.
    label_values = [int(c) if isinstance(c, bool) else c for c in classes]
    return classes, label_values


def sklearn_artifacts(loaded: registry.LoadedModel, reference_data: Any, options: BuildOptions, *, clock: Clock | None = None) -> Artifacts:
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
    # String imputers converted to look for a sentinel (the runtime feeds it for None/NaN);
    # the original model is never changed.
    bridged = bridge(original, columns, base)
    make = (clock or Clock()).timed("convert", lambda precision: convert(bridged.model, columns, precision, encode=options.encode_strings))
    # Convert before the gate: when no precision gives a graph that converts and runs, that
    # is a ConversionError of its own, not one of the gate's attempts (which would report
    # it as a parity failure). The first precision that works is handed to the gate as is.
    converted: dict[str, Any] = {}
    errors: list[ConversionError] = []
    for precision in options.precisions:
        try:
            candidate = make(precision)
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
            make=lambda precision: converted.get(precision) or make(precision),
            probes=lambda conv: threshold_probes(original, columns, _complete(base), converted=conv.onnx, limit=options.threshold_probe_rows),
            missing=bridged.missing,
            string_nulls=True,
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
    answers = original_answers(model, _complete(base), classification)
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
        inputs=with_missing_strings(
            input_entries(
                columns, outcome.converted, outcome.nullable, categories=categories, ranges=ranges, real=real, observed=reference_data is not None
            ),
            bridged.missing,
        ),
        parity=parity_record(outcome, tol, classification),
        golden=golden_set,
        baseline=baseline(base, columns, predictions, classification=classification, bins=options.histogram_bins,
                          synthesized=reference_data is None),
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
    complete = _complete(base)
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
