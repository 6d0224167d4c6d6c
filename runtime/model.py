"""``EdgeModel``: a verified, self-tested bundle ready to predict, and ``load`` to get one."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from . import signing
from .binding import PACK_ERRORS, RowBinding
from .bundle import GOLDEN, MODEL, Bundle, BundleLimits, read_bundle
from .errors import BundleError, EdgeError, InputError, SelfTestError
from .features import Flags
from .golden import golden_numbers, parse_golden, self_test
from .layout import assembly_problem
from .options import SessionOptions
from .outputs import OutputSpec
from .rows import SMALL_BATCH, OneRow, few_rows  # noqa: F401 - SMALL_BATCH: callers import it from here
from .schema import Feature, InputSchema
from .session import Session
from .telemetry_hook import TelemetrySink

BINDING_CHECK_ROWS = 16
"""Golden rows replayed at load through both one-row paths, which must agree exactly."""

log = logging.getLogger(__name__)

Result = dict[str, Any]


class EdgeModel:
    """One loaded model. Safe to share between threads; create it with ``runtime.load``.

    ``predict`` accepts one mapping (-> one result), a sequence of mappings or a
    DataFrame-like object with ``columns`` (-> a list of results); ``predict_batch`` takes
    columns and returns arrays. Every result carries ``"flags"``: a list of guardrail flag
    strings (``"unseen_category:<feature>"``, ``"out_of_range:<feature>"``,
    ``"prediction_out_of_range"``), empty when nothing was unusual. ``predict_batch``
    gives them as ``{row index: [flags]}`` for the flagged rows only, so a large clean
    batch costs nothing for them.

    With a telemetry sink that takes feedback attached (one with a ``feedback`` method,
    like ``telemetry.Buffer``: ``load(..., telemetry=buffer)``), every result of ``predict``
    also carries ``"record_id"``: the id the sink gave the row's record (a str from
    ``telemetry.Buffer``), or None when no record was kept (sampled out, queue full, or
    the sink failed). Hand it to ``Buffer.feedback(record_id, label)`` once the truth is
    known. ``predict_batch`` gives the ids as ``"record_ids"`` (one per row). Without
    such a sink the key is absent, so results keep their keys.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        telemetry: TelemetrySink | None = None,
        strict: bool = False,
        session_options: SessionOptions = SessionOptions(),
        limits: BundleLimits = BundleLimits(),
    ) -> None:
        if telemetry is not None and not callable(getattr(telemetry, "record", None)):
            raise TypeError(f"telemetry must have a record(...) method, got {type(telemetry).__name__}")
        self.bundle = bundle
        self.manifest: dict[str, Any] = bundle.manifest
        info = self.manifest.get("model")
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not isinstance(info.get("version"), str):
            raise BundleError("'model' must be an object with string 'name' and 'version'", entry="manifest.json")
        self.name: str = info["name"]
        self.version: str = info["version"]
        self.sha256: str = bundle.sha256
        self.strict = strict
        self.session_options = session_options

        self._session = Session(bundle.files[MODEL], session_options)
        self._schema = InputSchema(self.manifest, self._session.inputs)
        self._outputs = OutputSpec(self.manifest, self._session.outputs)
        self._output_names = list(self._outputs.names)
        self._run = self._session.run
        self._raw_run = self._session.raw_run
        self._run_options = self._session.run_options
        self._row_values = self._schema.row_values
        self._assemble = self._schema.assemble  # None: the validated values are the feed
        self._first = self._outputs.first
        self._binding: RowBinding | None = None
        self.inputs: tuple[Feature, ...] = self._schema.features
        self._column_kinds = tuple((f.name, f.dtype != "string") for f in self._schema.features)
        self._one_row = OneRow(self._column_kinds)
        self.classes: tuple[Any, ...] | None = self._outputs.classes
        self.task: str = self._outputs.task

        parity = self.manifest.get("parity")
        golden = parse_golden(
            bundle.files[GOLDEN],
            task=self.task,
            fallback_tolerance=parity.get("tolerance") if isinstance(parity, dict) else None,
            max_depth=limits.max_json_depth,
            label_only=self._outputs.label_only,
        )
        golden = replace(golden, inputs=golden_numbers(golden.inputs, self.inputs))
        self.golden_rows: int = golden.rows
        """How many golden rows the self-test replayed."""
        self_test(golden, lambda cols: self._predict_columns(cols, strict=False), self.classes)
        if self._assemble is not None and (problem := assembly_problem(self._schema, golden.inputs)):
            raise SelfTestError(f"encoded inputs are fed two ways: {problem}", entry=GOLDEN)
        # One single-row run so that the first real prediction does not pay for lazy setup;
        # its outputs shape the IOBinding of the one-row path, which must then answer the same.
        first = {name: col[0] for name, col in golden.inputs.items()}
        try:
            feeds, _, _ = self._schema.pack_row(first, False)
            probe = self._run(self._output_names, feeds)
            self._first(probe, [])
        except EdgeError as exc:
            raise SelfTestError(f"golden row 0 alone cannot be predicted: {exc}", entry=GOLDEN) from exc
        self._binding = self._checked_binding(probe, golden.inputs)

        self._telemetry = telemetry
        # Record ids are worth handing out only where they can be used: a sink that takes
        # feedback for them (telemetry.Buffer). Other sinks' results keep their keys.
        self._ids = callable(getattr(telemetry, "feedback", None))
        self._telemetry_lock = threading.Lock()
        self._telemetry_errors = 0

    # -- attributes -----------------------------------------------------------------------

    @property
    def signed(self) -> bool:
        """Whether the bundle carries a signature (checked only if ``signature_verified``)."""
        return self.bundle.signature is not None

    @property
    def signature_verified(self) -> bool:
        return self.bundle.signature_verified

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._schema.names

    @property
    def telemetry_errors(self) -> int:
        """How many telemetry ``record`` calls raised (each was swallowed)."""
        return self._telemetry_errors

    def schema_signature(self) -> tuple[tuple[str, str, str], ...]:
        """(name, dtype, kind) of every input feature, in order."""
        return self._schema.signature()

    def __repr__(self) -> str:
        return f"<EdgeModel {self.name} v{self.version} {self.task} sha256={self.sha256[:12]}>"

    # -- predicting -----------------------------------------------------------------------

    def predict(self, data: Any) -> Result | list[Result]:
        """Predict one mapping (-> one result) or many rows (-> a list of results)."""
        if type(data) is dict or isinstance(data, Mapping):
            # The hot path: one validation pass, one onnxruntime call, one result dict.
            values, flags = self._row_values(data, self.strict)
            result = self._predict_one(values, self._first, flags)
            if self._telemetry is not None:
                record_id = self._record(values, result)
                if self._ids:
                    result["record_id"] = record_id
            return result
        if hasattr(data, "columns") and hasattr(data, "to_dict"):
            return self._predict_frame(data)
        if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
            raise InputError(
                f"predict expects a mapping of feature -> value, a sequence of mappings or a DataFrame; got {type(data).__name__}"
            )
        rows = data if isinstance(data, (list, tuple)) else list(data)
        feeds, values, flags = self._schema.pack_rows(rows, self.strict)
        results = self._outputs.rows(self._run(self._output_names, feeds), flags)
        if self._telemetry is not None:
            for row_values, result in zip(values, results):
                record_id = self._record(row_values, result)
                if self._ids:
                    result["record_id"] = record_id
        return results

    def predict_batch(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """Predict columns (feature -> 1-D array) of N rows.

        Returns ``{"prediction": ndarray (N,), "probabilities": ndarray (N, C), "flags":
        {row: [flag, ...]}}`` for classification (probability columns in ``classes``
        order), ``{"prediction": ndarray (N,), "flags": {...}}`` for regression; ``flags``
        lists only the rows that have any (an empty dict for a clean batch). With
        telemetry attached, ``"record_ids"`` lists each row's record id (None where the
        sink kept no record), for ``Buffer.feedback``.
        """
        return self._predict_columns(columns, strict=self.strict, record=True)

    def _predict_frame(self, frame: Any) -> list[Result]:
        names = [str(c) for c in frame.columns]
        columns = {name: frame[col] for name, col in zip(names, frame.columns)}
        arrays = self._predict_columns(columns, strict=self.strict, record=True)
        rows = self._outputs.rows_of_arrays(arrays)
        if "record_ids" in arrays:
            for row, record_id in zip(rows, arrays["record_ids"]):
                row["record_id"] = record_id
        return rows

    def _predict_one(self, values: list[Sequence[Any]], finish: Any, flags: Flags) -> Any:
        """Run one validated row; ``finish(outputs, flags)`` turns the outputs into the result."""
        feed = values if self._assemble is None else self._assemble(values)
        binding = self._binding
        if binding is not None:
            try:
                return binding.run(feed, finish, flags)
            except PACK_ERRORS + Session.errors:
                pass  # the plain path below names what did not fit, or translates the failure
        feeds = self._schema.arrays_of(feed)
        try:
            raw = self._raw_run(self._output_names, feeds, self._run_options)
        except Session.errors as exc:
            raise Session.failure(exc) from exc
        return finish(raw, flags)

    def _checked_binding(self, probe: list[Any], golden: dict[str, list[Any]]) -> RowBinding | None:
        """The IOBinding path, if the graph can be bound and answers the golden rows (up to
        ``BINDING_CHECK_ROWS``) exactly as ``InferenceSession.run`` does; else None, and
        every row takes ``InferenceSession.run``."""
        binding = RowBinding.for_outputs(self._session, self._schema.packed, self._output_names, probe)
        if binding is None:
            return None
        rows = []
        for i in range(min([BINDING_CHECK_ROWS, *(len(col) for col in golden.values())])):
            try:
                values = self._row_values({name: col[i] for name, col in golden.items()}, False)[0]
            except InputError:
                continue  # not a row either path would run
            rows.append(values if self._assemble is None else self._assemble(values))
        problem = binding.disagreement(rows, lambda v: self._first(self._run(self._output_names, self._schema.arrays_of(v)), []), self._first)
        if problem is not None:
            log.info("%s v%s: one-row IOBinding path not used (%s)", self.name, self.version, problem)
            return None
        return binding

    def _predict_columns(self, columns: Mapping[str, Any], *, strict: bool, record: bool = False) -> dict[str, Any]:
        row = self._one_row(columns, strict)
        if row is not None:
            # One row (a caller predicting per row with predict_batch): the one-row path.
            try:
                values, flags = self._row_values(row, strict)
                result = self._predict_one(values, self._outputs.single_arrays, flags)
            except InputError as exc:
                raise exc.at_row(0) from None
            if record and self._telemetry is not None:
                record_ids = [self._record(values, self._outputs.rows_of_arrays(result)[0])]
                if self._ids:
                    result["record_ids"] = record_ids
            return result
        rows = few_rows(columns, self._column_kinds, strict)
        if rows is not None:
            # A few rows: the row path's validation costs a few µs per row, where the
            # column path's numpy calls cost ~50 µs of setup whatever the row count.
            feeds, values, row_flags = self._schema.pack_rows(rows, strict)
            result = self._outputs.arrays(self._run(self._output_names, feeds), {i: f for i, f in enumerate(row_flags) if f})
            if record and self._telemetry is not None:
                record_ids = [self._record(v, r) for v, r in zip(values, self._outputs.rows_of_arrays(result))]
                if self._ids:
                    result["record_ids"] = record_ids
            return result
        feeds, arrays, flags = self._schema.pack_columns(columns, strict)
        result = self._outputs.arrays(self._run(self._output_names, feeds), flags)
        if record and self._telemetry is not None:
            names = list(arrays)
            columns_as_lists = [arrays[n].tolist() for n in names]
            rows = self._outputs.rows_of_arrays(result)
            record_ids = []
            for i, row_result in enumerate(rows):
                inputs = {n: (None if (v := col[i]) is None or v != v else v) for n, col in zip(names, columns_as_lists)}
                record_ids.append(self._record_mapping(inputs, row_result))
            if self._ids:
                result["record_ids"] = record_ids
        return result

    # -- telemetry ------------------------------------------------------------------------

    def _record(self, values: list[Sequence[Any]], result: Result) -> str | None:
        """Hand one predicted row (its validated per-input values) to the telemetry sink;
        the record's id as the sink returned it (None if it returned none, or failed).

        The first call builds the per-row function (``telemetry_hook.row_recorder``) and
        stores it on the instance, where it hides this method: later rows call it directly."""
        from .telemetry_hook import row_recorder  # here: this method is all of model.py telemetry needs

        record = row_recorder(self)
        self._record = record  # type: ignore[method-assign]
        return record(values, result)

    def _record_mapping(self, inputs: dict[str, Any], result: Result) -> str | None:
        try:
            record_id = self._telemetry.record(  # type: ignore[union-attr]
                model=self.name,
                version=self.version,
                bundle_sha256=self.sha256,
                inputs=inputs,
                outputs=self._outputs.outputs_of(result),
                flags=list(result["flags"]),
            )
        except Exception as exc:  # a sink's failure must never fail a prediction
            self._telemetry_failed(exc)
            return None
        return record_id if type(record_id) is str else None

    def _telemetry_failed(self, exc: Exception) -> None:
        with self._telemetry_lock:
            self._telemetry_errors += 1
            first = self._telemetry_errors == 1
        if first:
            log.warning(
                "telemetry record() failed for %s v%s (%s: %s); predictions continue, further failures are only counted "
                "in EdgeModel.telemetry_errors",
                self.name,
                self.version,
                type(exc).__name__,
                exc,
            )


def load(
    path: str | os.PathLike[str] | bytes,
    *,
    public_key: signing.KeySource | None = None,
    require_signature: bool = False,
    telemetry: TelemetrySink | None = None,
    threads: int = 1,
    strict: bool = False,
    session_options: SessionOptions | None = None,
    limits: BundleLimits = BundleLimits(),
) -> EdgeModel:
    """Read, verify and self-test a bundle; return the model ready to predict.

    Raises ``BundleError`` for any defect of the archive or manifest, ``SignatureError``
    for a bad signature (or a missing one with ``require_signature=True``) and
    ``SelfTestError`` when the model does not reproduce its golden outputs here.

    Without ``public_key`` the bundle's authenticity is not checked: a WARNING naming the
    bundle is logged (once per bundle file and process) and ``signature_verified`` is
    False. ``limits`` bounds what the archive may make the device allocate
    (``BundleLimits.max_model_bytes`` for ``model.onnx``).

    ``threads`` is onnxruntime's intra-op thread count; ``session_options`` gives full
    control instead (then leave ``threads`` at 1 or make the two agree). With
    ``strict=True`` unknown keys and categories never seen in training are InputErrors
    instead of being ignored / flagged.
    """
    if session_options is None:
        session_options = SessionOptions(intra_op_threads=threads)
    elif threads != 1 and threads != session_options.intra_op_threads:
        raise ValueError(
            f"threads={threads} disagrees with session_options.intra_op_threads={session_options.intra_op_threads}; give one"
        )
    bundle = read_bundle(path, public_key=public_key, require_signature=require_signature, limits=limits)
    if not bundle.signature_verified and _first_unverified(bundle):
        # Fail-open on purpose (a development workflow), but never silently: one WARNING per
        # bundle and process, so that an app reloading it (or a benchmark) does not drown its log.
        log.warning(
            "bundle %s loaded WITHOUT checking its signature (%s): its authenticity was NOT verified, so anyone "
            "who could write this file could have changed the model. Pass public_key=... and require_signature=True",
            bundle.path or f"(bytes, sha256 {bundle.sha256[:12]})",
            "it is signed but no public key was given" if bundle.signature is not None else "it is not signed",
        )
    return EdgeModel(bundle, telemetry=telemetry, strict=strict, session_options=session_options, limits=limits)


_warned: set[tuple[str | None, str]] = set()
_warned_lock = threading.Lock()


def _first_unverified(bundle: Bundle) -> bool:
    key = (bundle.path, bundle.sha256)
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    return first
