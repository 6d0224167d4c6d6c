"""The model's output contract, read once from the manifest: from ONNX tensors to results.

A classification result is ``{"prediction": label, "probabilities": {label: p, ...},
"flags": [...]}`` with labels in their original type (int, str or bool); a label-only
classifier (``outputs.label_only``: the original had no ``predict_proba``) gives
``{"prediction": label, "flags": [...]}``; a regression result is ``{"prediction": float,
"flags": [...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import BundleError, PredictionError
from .features import Flags, RowFlags

MANIFEST = "manifest.json"
PREDICTION_OUT_OF_RANGE = "prediction_out_of_range"


def _manifest_error(message: str) -> BundleError:
    return BundleError(message, entry=MANIFEST)


def _class_array(classes: Sequence[Any]) -> np.ndarray:
    if all(isinstance(c, bool) for c in classes):
        return np.array(classes, dtype=bool)
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.array(classes, dtype=np.int64)
    return np.array(classes, dtype=object)


class OutputSpec:
    """Turns raw ONNX outputs into results. Immutable after construction; thread-safe."""

    def __init__(self, manifest: Mapping[str, Any], session_outputs: Mapping[str, tuple[str, list[Any]]]) -> None:
        raw = manifest.get("outputs")
        if not isinstance(raw, dict):
            raise _manifest_error("'outputs' must be an object with task and output names")
        self.task: str = raw.get("task")  # type: ignore[assignment]
        self.classes: tuple[Any, ...] | None = None
        self.target_range: tuple[float, float] | None = None
        self.label_only: bool = False
        """A classifier that answers labels only (no ``probabilities`` in its results)."""
        if self.task == "classification":
            classes, label_values = raw.get("classes"), raw.get("label_values", raw.get("classes"))
            label, probabilities = raw.get("label"), raw.get("probabilities")
            label_only = raw.get("label_only", False)
            if not isinstance(label_only, bool) or (label_only and probabilities is not None):
                raise _manifest_error(
                    f"outputs.label_only must be true (with probabilities null) or false, got {label_only!r} "
                    f"with probabilities {probabilities!r}"
                )
            if not isinstance(classes, list) or len(classes) < 2:
                raise _manifest_error(f"outputs.classes must list at least two labels, got {classes!r}")
            if not all(isinstance(c, (int, str, bool)) for c in classes) or len({(type(c), c) for c in classes}) != len(classes):
                raise _manifest_error(f"outputs.classes must be distinct ints, strings or booleans, got {classes!r}")
            if not isinstance(label_values, list) or len(label_values) != len(classes):
                raise _manifest_error(
                    f"outputs.label_values must give one label tensor value per class ({len(classes)}), got {label_values!r}"
                )
            named = (("label", label),) if label_only else (("label", label), ("probabilities", probabilities))
            for field, name in named:
                if not isinstance(name, str) or name not in session_outputs:
                    raise _manifest_error(
                        f"outputs.{field} must name an output of model.onnx ({', '.join(session_outputs)}), got {name!r}"
                    )
            if not label_only:
                width = session_outputs[probabilities][1]
                if len(width) != 2 or (isinstance(width[1], int) and width[1] != len(classes)):
                    raise _manifest_error(
                        f"output {probabilities!r} has shape {width} in model.onnx; expected (N, {len(classes)}) for {len(classes)} classes"
                    )
            self.label_only = label_only
            self.classes = tuple(classes)
            self.names: list[str] = [label] if label_only else [label, probabilities]
            self._label_of = {v: c for v, c in zip(label_values, classes)}
            self._index_of = {v: i for i, v in enumerate(label_values)}
            self._class_array = _class_array(classes)
            self._sorted_values: np.ndarray | None = None
            self._sorted_order = np.empty(0, dtype=np.intp)
            plain_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in label_values)
            if plain_ints or all(isinstance(v, str) for v in label_values):
                order = sorted(range(len(label_values)), key=label_values.__getitem__)
                self._sorted_values = np.array([label_values[i] for i in order], dtype=np.int64 if plain_ints else str)
                self._sorted_order = np.array(order, dtype=np.intp)
        elif self.task == "regression":
            prediction = raw.get("prediction")
            if not isinstance(prediction, str) or prediction not in session_outputs:
                raise _manifest_error(
                    f"outputs.prediction must name an output of model.onnx ({', '.join(session_outputs)}), got {prediction!r}"
                )
            span = raw.get("target_range")
            if span is not None:
                if not isinstance(span, list) or len(span) != 2 or not all(isinstance(v, (int, float)) for v in span):
                    raise _manifest_error(f"outputs.target_range must be [min, max] or null, got {span!r}")
                self.target_range = (float(span[0]), float(span[1]))
            self.names = [prediction]
        else:
            raise _manifest_error(f"outputs.task must be 'classification' or 'regression', got {self.task!r}")

    # -- results --------------------------------------------------------------------------

    def first(self, raw: list[np.ndarray], flags: Flags) -> dict[str, Any]:
        """The result of a one-row run."""
        if self.classes is not None:
            labels = raw[0]  # (1,) or (1, 1): item(0) reads either
            try:
                prediction = self._label_of[labels.item(0)]
            except KeyError:
                raise self._unknown_label(labels.item(0)) from None
            if self.label_only:
                return {"prediction": prediction, "flags": flags}
            return {
                "prediction": prediction,
                "probabilities": dict(zip(self.classes, raw[1].tolist()[0])),
                "flags": flags,
            }
        value = float(raw[0].item(0))
        if self.target_range is not None and not self.target_range[0] <= value <= self.target_range[1]:
            flags.append(PREDICTION_OUT_OF_RANGE)
        return {"prediction": value, "flags": flags}

    def rows(self, raw: list[np.ndarray], flags: list[Flags]) -> list[dict[str, Any]]:
        """The results of a many-row run, one dict per row."""
        if self.classes is not None:
            labels = raw[0].reshape(-1)  # some converters (QDA's) give (N, 1) labels
            if self.label_only:
                return [{"prediction": p, "flags": f} for p, f in zip(self._class_array[self._indices(labels)].tolist(), flags)]
            probabilities = raw[1]
            classes, label_of = self.classes, self._label_of
            out = []
            for label, row, row_flags in zip(labels.tolist(), probabilities.tolist(), flags):
                try:
                    prediction = label_of[label]
                except KeyError:
                    raise self._unknown_label(label) from None
                out.append({"prediction": prediction, "probabilities": dict(zip(classes, row)), "flags": row_flags})
            return out
        values = self._regression_values(raw[0])
        if self.target_range is not None:
            for i in self._outside_target(values):
                flags[i].append(PREDICTION_OUT_OF_RANGE)
        return [{"prediction": v, "flags": f} for v, f in zip(values.tolist(), flags)]

    def arrays(self, raw: list[np.ndarray], flags: RowFlags) -> dict[str, Any]:
        """The results of a many-row run as arrays; ``flags`` only for rows that have any."""
        if self.classes is not None:
            labels = raw[0].reshape(-1)  # some converters (QDA's) give (N, 1) labels
            if self.label_only:
                return {"prediction": self._class_array[self._indices(labels)], "flags": flags}
            return {"prediction": self._class_array[self._indices(labels)], "probabilities": raw[1], "flags": flags}
        values = self._regression_values(raw[0])
        if self.target_range is not None:
            for i in self._outside_target(values):
                flags.setdefault(i, []).append(PREDICTION_OUT_OF_RANGE)
        return {"prediction": values, "flags": flags}

    def rows_of_arrays(self, arrays: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``arrays``' result as one result dict per row (what ``predict`` gives)."""
        predictions = arrays["prediction"].tolist()
        flagged = arrays["flags"]
        if self.classes is None or "probabilities" not in arrays:  # regression, or a label-only classifier
            return [{"prediction": p, "flags": list(flagged.get(i, ()))} for i, p in enumerate(predictions)]
        classes = self.classes
        return [
            {"prediction": p, "probabilities": dict(zip(classes, row)), "flags": list(flagged.get(i, ()))}
            for i, (p, row) in enumerate(zip(predictions, arrays["probabilities"].tolist()))
        ]

    def single_arrays(self, raw: list[np.ndarray], flags: Flags) -> dict[str, Any]:
        """What ``arrays`` gives for a one-row run, copied out of ``raw`` (whose buffers the
        next call may reuse), without ``arrays``' per-batch numpy calls."""
        flagged: RowFlags = {0: flags} if flags else {}
        if self.classes is not None:
            label = raw[0].item(0)
            try:
                prediction = self._class_array[[self._index_of[label]]]  # a list index copies
            except KeyError:
                raise self._unknown_label(label) from None
            if self.label_only:
                return {"prediction": prediction, "flags": flagged}
            return {"prediction": prediction, "probabilities": raw[1].copy(), "flags": flagged}
        values = self._regression_values(raw[0]).copy()
        if self.target_range is not None:
            if not self.target_range[0] <= values[0] <= self.target_range[1]:  # NaN included, as everywhere
                flagged.setdefault(0, []).append(PREDICTION_OUT_OF_RANGE)
        return {"prediction": values, "flags": flagged}

    def _indices(self, labels: np.ndarray) -> np.ndarray:
        """Class index of every label tensor value, vectorised when the values sort (and
        there are enough of them for numpy's per-call cost to pay)."""
        if self._sorted_values is None or len(labels) <= 8:
            index_of = self._index_of
            try:
                return np.fromiter((index_of[v] for v in labels.tolist()), dtype=np.intp, count=len(labels))
            except KeyError as exc:
                raise self._unknown_label(exc.args[0]) from None
        # str, not the sorted array's own '<Un' dtype, which would cut longer labels short.
        values = labels.astype(str if self._sorted_values.dtype.kind == "U" else np.int64, copy=False)
        position = np.minimum(np.searchsorted(self._sorted_values, values), len(self._sorted_values) - 1)
        known = self._sorted_values[position] == values
        if not known.all():
            raise self._unknown_label(labels.tolist()[int(np.flatnonzero(~known)[0])])
        return self._sorted_order[position]

    def outputs_of(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """A result without its flags (what telemetry records as outputs)."""
        if self.classes is not None and not self.label_only:
            return {"prediction": result["prediction"], "probabilities": dict(result["probabilities"])}
        return {"prediction": result["prediction"]}

    @staticmethod
    def _regression_values(raw: np.ndarray) -> np.ndarray:
        if raw.ndim == 2 and raw.shape[1] != 1:
            raise PredictionError(f"regression output has shape {raw.shape}; expected (N,) or (N, 1)")
        return raw.reshape(-1).astype(np.float64, copy=False)

    def _outside_target(self, values: np.ndarray) -> list[int]:
        lo, hi = self.target_range  # type: ignore[misc]
        # Written as "not inside" so that a NaN prediction is flagged too, as predict(dict) flags it.
        return np.flatnonzero(~((values >= lo) & (values <= hi))).tolist()

    def _unknown_label(self, value: Any) -> PredictionError:
        return PredictionError(
            f"model.onnx returned label {value!r}, which is not one of the manifest's label_values "
            f"{list(self._label_of)}; the bundle's manifest does not match its model"
        )
