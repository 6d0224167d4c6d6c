"""The onnxruntime session: created from bundle bytes, errors translated here and only here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import BundleError, PredictionError
from .options import SessionOptions

_ORT_ERRORS: tuple[type[BaseException], ...] = (
    ort.capi.onnxruntime_pybind11_state.Fail,
    ort.capi.onnxruntime_pybind11_state.InvalidArgument,
    ort.capi.onnxruntime_pybind11_state.InvalidGraph,
    ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
    ort.capi.onnxruntime_pybind11_state.NotImplemented,
    ort.capi.onnxruntime_pybind11_state.RuntimeException,
    ort.capi.onnxruntime_pybind11_state.NoSuchFile,
    ort.capi.onnxruntime_pybind11_state.EngineError,
    RuntimeError,
)

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

ORT_DTYPES: Mapping[str, str] = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "int64": "tensor(int64)",
    "string": "tensor(string)",
}
"""Manifest dtype -> the type string onnxruntime reports for a graph input."""


def onnxruntime_version() -> str:
    return str(ort.__version__)


def ort_session_options(options: SessionOptions) -> ort.SessionOptions:
    """Translate ``options`` to onnxruntime's ``SessionOptions``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if options.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_cpu_mem_arena = options.memory_arena
    so.enable_mem_pattern = options.memory_pattern
    so.graph_optimization_level = _OPTIMIZATION[options.optimization]
    spin = "1" if options.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3  # warnings about unused initializers are noise on a device
    return so


class Session:
    """An ``InferenceSession`` over the bundle's ``model.onnx``.

    ``run`` is safe to call from many threads at once (onnxruntime guarantees it for
    ``InferenceSession.run``), and holds no per-call state of its own.
    """

    __slots__ = ("_session", "_run", "_run_options", "inputs", "outputs", "options", "cpu_only")

    def __init__(self, model_bytes: bytes, options: SessionOptions) -> None:
        available = set(ort.get_available_providers())
        if unknown := [p for p in options.providers if p not in available]:
            raise BundleError(
                f"execution provider(s) {', '.join(unknown)} not available in this onnxruntime "
                f"(available: {', '.join(sorted(available))})",
                entry="model.onnx",
            )
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=ort_session_options(options), providers=list(options.providers)
            )
        except _ORT_ERRORS as exc:
            raise BundleError(
                f"onnxruntime {ort.__version__} cannot load the model: {exc}", entry="model.onnx"
            ) from exc
        # InferenceSession.run re-validates input names and OrtValue ownership on every
        # call (a few microseconds, a tenth of a small tree model's run). The schema already
        # checked the names against the graph at load, so call the binding underneath it
        # when this onnxruntime has one.
        binding = getattr(self._session, "_sess", None)
        self._run = binding.run if binding is not None and hasattr(binding, "run") else self._session.run
        # One RunOptions for every call: run(..., None) makes onnxruntime build a default one
        # per call (~0.7 µs on a 5 µs run). Session::Run only reads it, so threads share it.
        self._run_options = ort.RunOptions()
        self.options = options
        self.cpu_only: bool = self._session.get_providers() == ["CPUExecutionProvider"]
        """Whether the session runs on the CPU provider alone (what ``RowBinding`` binds for)."""
        self.inputs: dict[str, tuple[str, list[Any]]] = {
            i.name: (i.type, list(i.shape)) for i in self._session.get_inputs()
        }
        """Graph input name -> (onnxruntime type string, shape)."""
        self.outputs: dict[str, tuple[str, list[Any]]] = {
            o.name: (o.type, list(o.shape)) for o in self._session.get_outputs()
        }
        """Graph output name -> (onnxruntime type string, shape)."""

    errors = _ORT_ERRORS
    """What ``raw_run`` may raise; pass it to ``failure`` to translate."""

    @property
    def ort(self) -> ort.InferenceSession:
        """The onnxruntime session itself (for ``runtime.binding``)."""
        return self._session

    @property
    def run_options(self) -> ort.RunOptions:
        """The ``RunOptions`` every call passes (shared, never changed)."""
        return self._run_options

    @property
    def raw_run(self) -> Callable[[Sequence[str], Mapping[str, np.ndarray], Any], list[np.ndarray]]:
        """``run`` without the translation, for the single-row hot path: call it as
        ``raw_run(names, feeds, session.run_options)`` inside ``try``/``except
        Session.errors`` and raise ``failure(exc)``."""
        return self._run

    def iobinding_runner(self, binding: ort.IOBinding) -> Callable[[], None]:
        """A call that runs the session on ``binding`` (untranslated errors, like ``raw_run``)."""
        inner = getattr(self._session, "_sess", None)
        raw_binding = getattr(binding, "_iobinding", None)
        options = self._run_options
        if inner is not None and raw_binding is not None and hasattr(inner, "run_with_iobinding"):
            # The binding underneath: the wrapper's graph-capture checks cost ~0.4 µs per call
            # and concern WebGPU only. A partial is called without a Python frame.
            return partial(inner.run_with_iobinding, raw_binding, options)
        return partial(self._session.run_with_iobinding, binding, options)

    @staticmethod
    def failure(exc: BaseException) -> PredictionError:
        return PredictionError(f"onnxruntime failed to run the model: {exc}")

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._run(output_names, feeds, self._run_options)
        except _ORT_ERRORS as exc:
            raise self.failure(exc) from exc
