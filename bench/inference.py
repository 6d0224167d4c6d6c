"""The prediction paths compared side by side: edgepack, the bare onnxruntime floor, the hand-made
skl2onnx path, scikit-learn and mlflow.pyfunc; single-row latency and batch throughput."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from . import floors
from .figures import Figure, error_figure, set_ratios, timing_figure
from .options import BenchOptions
from .timing import interleave
from .zoo import ModelCase

PREDICT_DICT = "edgepack predict(dict)"
PREDICT_BATCH = "edgepack predict_batch"
FLOOR = "bare onnxruntime"
HANDMADE = "hand-made skl2onnx"
SKLEARN = "scikit-learn"
PYFUNC = "mlflow.pyfunc"
PATHS = (PREDICT_DICT, PREDICT_BATCH, FLOOR, HANDMADE, SKLEARN, PYFUNC)

DISTINCT_ROWS = 16
"""Single-row calls cycle over this many different rows, so no path times one lucky row."""

NUMPY_DTYPES: dict[str, Any] = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "string": object}

LATENCY_NOTES = {
    PREDICT_DICT: "one dict of Python values per call",
    PREDICT_BATCH: "dict of one-element numpy arrays",
    FLOOR: "InferenceSession.run on the bundle's model.onnx, packed inputs prepared in advance, the runtime's session options"
    " (a bundle whose strings the runtime one-hot encodes gets its floats prepared in advance too: no string work at all)",
    HANDMADE: "skl2onnx.to_onnx defaults (ZipMap on, one input per column), feed built from the dict each call, the runtime's session options",
    SKLEARN: "predict_proba / predict on a prepared one-row DataFrame",
    PYFUNC: "pyfunc predict on a prepared one-row DataFrame",
    **floors.NOTES,
}
THROUGHPUT_NOTES = {
    PREDICT_DICT: "one list of dicts per call",
    PREDICT_BATCH: "dict of numpy column arrays",
    FLOOR: "packed inputs prepared in advance",
    HANDMADE: "per-column feed built from numpy columns each call",
    SKLEARN: "predict_proba / predict on a DataFrame",
    PYFUNC: "pyfunc predict on a DataFrame",
}


def session_options(threads: int = 1) -> Any:
    """onnxruntime options exactly as ``runtime.load(..., threads=threads)`` sets them, so the
    floor and the hand-made path differ from edgepack only in what they are measured for."""
    from runtime import SessionOptions
    from runtime.session import ort_session_options

    return ort_session_options(SessionOptions(intra_op_threads=threads))


def native_rows(frame: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """``count`` rows as dicts of plain Python values (what an application has at hand)."""
    rows = frame.head(count).to_dict(orient="records")
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()} for row in rows]


def numpy_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Numeric columns as float64 arrays, string columns as object arrays of ``str``."""
    columns: dict[str, np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series):
            columns[name] = series.to_numpy(dtype=np.float64)
        else:
            columns[name] = series.to_numpy(dtype=object)
    return columns


def pack(manifest: dict[str, Any], columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The bundle's packed ONNX feed (docs/bundle-format.md, "Packed inputs") for ``columns``."""
    rows = len(next(iter(columns.values())))
    feed = {
        spec["name"]: np.empty((rows, int(spec["width"])), dtype=NUMPY_DTYPES[spec["dtype"]])
        for spec in manifest["onnx_inputs"]
    }
    from runtime.encodings import parse_encoding

    for i, spec in enumerate(manifest["inputs"]):
        target = feed[spec["onnx_input"]]
        values = columns[spec["name"]]
        encoding = parse_encoding(i, spec["name"], spec.get("encoding"), spec.get("dtype", "string"))
        if encoding is not None:  # the one-hot floats the runtime feeds for a string (prepared too)
            start = int(spec["slot"])
            target[:, start : start + encoding.width] = encoding.block(np.asarray([str(v) for v in values], dtype=object), target.dtype)
        elif target.dtype == object:
            target[:, int(spec["slot"])] = [str(v) for v in values]
        else:
            target[:, int(spec["slot"])] = np.asarray(values, dtype=np.float64)
    return feed


class HandMade:
    """What a user writes today: ``skl2onnx.to_onnx`` with its defaults and an ORT session."""

    def __init__(self, case: ModelCase) -> None:
        import onnxruntime as ort
        from skl2onnx import to_onnx

        self.numeric = set(case.numeric_columns)
        self.columns = list(case.frame.columns)
        sample = case.frame.head(1).copy()
        # A float64 frame makes double inputs, which ORT's Imputer does not implement; users cast.
        for column in self.numeric:
            sample[column] = sample[column].astype(np.float32)
        self.per_column = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                onx = to_onnx(case.estimator, sample)
            except Exception as exc:  # noqa: BLE001
                # A bare estimator (no Pipeline) takes one matrix, not one input per column.
                if "at most 1 input" not in str(exc) or self.numeric != set(self.columns):
                    raise
                onx = to_onnx(case.estimator, sample.to_numpy(dtype=np.float32))
                self.per_column = False
        self.session = ort.InferenceSession(onx.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    @property
    def note(self) -> str:
        return "" if self.per_column else " (bare estimator: skl2onnx accepts only one float matrix input)"

    def feed_row(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
        if not self.per_column:
            return {self.names[0]: np.array([[row[c] for c in self.columns]], dtype=np.float32)}
        return {
            name: np.array([[row[c]]], dtype=np.float32 if c in self.numeric else object)
            for name, c in zip(self.names, self.columns)
        }

    def feed_columns(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.per_column:
            return {self.names[0]: np.column_stack([columns[c] for c in self.columns]).astype(np.float32)}
        return {
            name: columns[c].astype(np.float32 if c in self.numeric else object).reshape(-1, 1)
            for name, c in zip(self.names, self.columns)
        }

    def run(self, feed: dict[str, np.ndarray]) -> Any:
        return self.session.run(None, feed)


class Contenders:
    """The loaded objects behind every path for one model case; a missing one keeps its error."""

    def __init__(self, case: ModelCase) -> None:
        self.case = case
        self.errors: dict[str, str] = {}
        self.edge: Any = None
        self.floor: Any = None
        self.manifest: dict[str, Any] | None = None
        self.handmade: HandMade | None = None
        self.pyfunc: Any = None
        self._load()

    def _fail(self, paths: tuple[str, ...], exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        for path in paths:
            self.errors[path] = text

    def _load(self) -> None:
        import onnxruntime as ort

        import runtime

        case = self.case
        if case.bundle is None:
            self._fail((PREDICT_DICT, PREDICT_BATCH, FLOOR), f"n/a (no bundle: {case.bundle_error})")
        else:
            if not hasattr(runtime, "load"):
                self._fail((PREDICT_DICT, PREDICT_BATCH), "n/a (not available: runtime.load)")
            else:
                try:
                    self.edge = runtime.load(str(case.bundle), threads=1)
                except Exception as exc:  # noqa: BLE001
                    self._fail((PREDICT_DICT, PREDICT_BATCH), exc)
            try:
                bundle = runtime.read_bundle(str(case.bundle))
                self.manifest = bundle.manifest
                self.floor = ort.InferenceSession(bundle.files["model.onnx"], session_options(), providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001
                self._fail((FLOOR,), exc)
        try:
            self.handmade = HandMade(case)
        except Exception as exc:  # noqa: BLE001
            self._fail((HANDMADE,), exc)
        if case.registry_error:
            self._fail((PYFUNC,), f"n/a (model not registered: {case.registry_error})")
        else:
            try:
                import mlflow.pyfunc

                self.pyfunc = mlflow.pyfunc.load_model(case.model_uri)
            except Exception as exc:  # noqa: BLE001
                self._fail((PYFUNC,), exc)

    def sklearn_call(self) -> Callable[[pd.DataFrame], Any]:
        estimator = self.case.estimator
        return estimator.predict_proba if self.case.task == "classification" else estimator.predict

    def single_row_paths(self) -> dict[str, Callable[[], object]]:
        frame = self.case.frame.head(DISTINCT_ROWS)
        rows = native_rows(frame, DISTINCT_ROWS)
        paths: dict[str, Callable[[], object]] = {}
        if self.edge is not None:
            edge = self.edge
            dict_rows = itertools.cycle(rows)
            paths[PREDICT_DICT] = lambda: edge.predict(next(dict_rows))
            one_row_columns = itertools.cycle([numpy_columns(frame.iloc[i : i + 1]) for i in range(len(frame))])
            paths[PREDICT_BATCH] = lambda: edge.predict_batch(next(one_row_columns))
        if self.floor is not None and self.manifest is not None:
            session, manifest = self.floor, self.manifest
            try:
                feeds = itertools.cycle([pack(manifest, numpy_columns(frame.iloc[i : i + 1])) for i in range(len(frame))])
                paths[FLOOR] = lambda: session.run(None, next(feeds))
            except Exception as exc:  # noqa: BLE001
                self._fail((FLOOR,), exc)
        if self.handmade is not None:
            handmade = self.handmade
            handmade_rows = itertools.cycle(rows)
            paths[HANDMADE] = lambda: handmade.run(handmade.feed_row(next(handmade_rows)))
        call = self.sklearn_call()
        frames = itertools.cycle([frame.iloc[i : i + 1] for i in range(len(frame))])
        paths[SKLEARN] = lambda: call(next(frames))
        if self.pyfunc is not None:
            pyfunc = self.pyfunc
            pyfunc_frames = itertools.cycle([frame.iloc[i : i + 1] for i in range(len(frame))])
            paths[PYFUNC] = lambda: pyfunc.predict(next(pyfunc_frames))
        # What the floor is made of (trees behind preprocessing only): the trees alone, the old graph.
        paths.update(floors.floor_paths(self.case, self.manifest, DISTINCT_ROWS, self.errors))
        return paths

    def batch_paths(self, rows: int) -> dict[str, Callable[[], object]]:
        frame = self.case.frame.head(rows)
        columns = numpy_columns(frame)
        paths: dict[str, Callable[[], object]] = {}
        if self.edge is not None:
            edge = self.edge
            dict_rows = native_rows(frame, rows)
            paths[PREDICT_DICT] = lambda: edge.predict(dict_rows)
            paths[PREDICT_BATCH] = lambda: edge.predict_batch(columns)
        if self.floor is not None and self.manifest is not None:
            session = self.floor
            try:
                feed = pack(self.manifest, columns)
                paths[FLOOR] = lambda: session.run(None, feed)
            except Exception as exc:  # noqa: BLE001
                self._fail((FLOOR,), exc)
        if self.handmade is not None:
            handmade = self.handmade
            paths[HANDMADE] = lambda: handmade.run(handmade.feed_columns(columns))
        call = self.sklearn_call()
        paths[SKLEARN] = lambda: call(frame)
        if self.pyfunc is not None:
            pyfunc = self.pyfunc
            paths[PYFUNC] = lambda: pyfunc.predict(frame)
        return paths


def _figures(
    section: str,
    case: ModelCase,
    contenders: Contenders,
    paths: dict[str, Callable[[], object]],
    *,
    rounds: int,
    calls: int,
    warmup: int,
    budget: float | None,
    unit: str,
    per_call_units: float,
    notes: dict[str, str],
) -> list[Figure]:
    timings = interleave(paths, rounds=rounds, calls=calls, warmup=warmup, budget=budget)
    figures = []
    seconds = timings.seconds
    # The floor's parts are reported only for the models they apply to.
    extra = tuple(p for p in floors.PATHS if p in notes and (p in paths or p in contenders.errors))
    for path in PATHS + extra:
        note = notes[path]
        if path == HANDMADE and contenders.handmade is not None:
            note += contenders.handmade.note
        if seconds.get(path):
            figures.append(
                timing_figure(
                    section=section,
                    path=path,
                    seconds=seconds[path],
                    unit=unit,
                    model=case.name,
                    per_call_units=per_call_units,
                    note=note,
                )
            )
        else:
            error = timings.errors.get(path) or contenders.errors.get(path) or "not measured"
            figures.append(error_figure(section=section, path=path, unit=unit, error=error, model=case.name))
    set_ratios(figures, FLOOR)
    return figures


def measure_latency(case: ModelCase, contenders: Contenders, options: BenchOptions) -> list[Figure]:
    """Single-row latency of every path, interleaved; ratios against the bare-ORT floor."""
    return _figures(
        "latency",
        case,
        contenders,
        contenders.single_row_paths(),
        rounds=options.latency_rounds,
        calls=options.latency_calls,
        warmup=options.latency_warmup,
        budget=options.latency_budget,
        unit="us",
        per_call_units=1,
        notes=LATENCY_NOTES,
    )


def measure_throughput(case: ModelCase, contenders: Contenders, options: BenchOptions) -> list[Figure]:
    """Rows per second at ``options.batch_rows`` rows per call, interleaved."""
    rows = min(options.batch_rows, len(case.frame))
    return _figures(
        "throughput",
        case,
        contenders,
        contenders.batch_paths(rows),
        rounds=options.batch_rounds,
        calls=1,
        warmup=1,
        budget=None,
        unit="rows/s",
        per_call_units=rows,
        notes={k: f"{v}, {rows:,} rows per call" for k, v in THROUGHPUT_NOTES.items()},
    )
