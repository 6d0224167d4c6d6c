"""The ``onnx`` flavor: the model is taken as it is (external data folded in), its inputs
packed like a converted model's, and the packed graph checked against the original graph."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .baseline import baseline
from .convert import Column, Converted
from .graph_edits import normalise
from .errors import ConversionError
from .golden import golden_record, golden_rows, json_value
from .manifest import Artifacts, input_entries
from .options import BuildOptions
from .packing import pack
from .parity import Answers, parity_record, run_parity, session, tolerance_for
from .reference import read_reference, reference_frames, target_range_of
from .registry import LoadedModel


def _elem_kind(elem_type: int) -> str:
    from onnx import TensorProto

    return "categorical" if elem_type == TensorProto.STRING else "numeric"


def _strip_zipmap(model: Any) -> None:
    """Expose the (N, C) probability tensor instead of ZipMap's list of dicts."""
    from onnx import TensorProto, helper

    from onnx import shape_inference

    producers = {out: node for node in model.graph.node for out in node.output}
    known = {vi.name: vi for vi in shape_inference.infer_shapes(model).graph.value_info}
    for i, out in enumerate(list(model.graph.output)):
        node = producers.get(out.name)
        if node is None or node.op_type != "ZipMap":
            continue
        source = node.input[0]
        inferred = known.get(source)
        elem = inferred.type.tensor_type.elem_type if inferred is not None else 0
        replacement = helper.make_tensor_value_info(source, elem or TensorProto.FLOAT, [None, None])
        model.graph.node.remove(node)
        model.graph.output.remove(out)
        model.graph.output.insert(i, replacement)


def _classes(model: Any) -> list[Any] | None:
    from onnx import helper

    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name.startswith("classlabels_"):
                values = helper.get_attribute_value(attr)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


def _columns(model: Any, loaded: LoadedModel) -> tuple[list[Column], list[list[str]]]:
    init = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in init]
    sig = [n for n, _ in loaded.signature_columns or []]
    example_cols = [str(c) for c in loaded.input_example.columns] if loaded.input_example is not None else []
    for vi in inputs:
        if len(vi.type.tensor_type.shape.dim) != 2:
            raise ConversionError(
                f"ONNX input {vi.name!r} has rank {len(vi.type.tensor_type.shape.dim)}; edgepack feeds (N, width) inputs"
            )
    widths = [vi.type.tensor_type.shape.dim[1].dim_value for vi in inputs]
    if all(w == 1 for w in widths):
        # Converters sanitise names ("temp c" -> "temp_c") but keep the order of the columns.
        if len(sig) == len(inputs):
            names = sig
        elif len(example_cols) == len(inputs):
            names = example_cols
        else:
            names = [vi.name for vi in inputs]
        cols = [Column(n, _elem_kind(vi.type.tensor_type.elem_type)) for n, vi in zip(names, inputs)]
        return cols, [[c.name] for c in cols]
    if len(inputs) == 1 and widths[0] > 0:
        vi, width = inputs[0], widths[0]
        if len(sig) == width:
            names = sig
        elif len(example_cols) == width:
            names = example_cols
        else:
            names = [f"{vi.name}_{i}" for i in range(width)]
        kind = _elem_kind(vi.type.tensor_type.elem_type)
        cols = [Column(n, kind) for n in names]
        return cols, [names]
    raise ConversionError(
        "edgepack takes ONNX models with one (N, F) input or one (N, 1) input per feature; this one has "
        + ", ".join(f"{vi.name} (width {w or '?'})" for vi, w in zip(inputs, widths))
    )


class _OriginalGraph:
    """The model as logged, run per its own inputs: the "original" side of the parity gate."""

    def __init__(self, model: Any, columns: list[Column], per_input: list[list[str]], classes: list[Any] | None) -> None:
        import numpy as np

        self._np = np
        self._sess = session(model.SerializeToString())
        self._inputs = [(i.name, i.type) for i in self._sess.get_inputs()]
        self._per_input = per_input
        self.classes = classes

    def _run(self, frame: Any) -> list[Any]:
        np = self._np
        feeds = {}
        for (name, typ), cols in zip(self._inputs, self._per_input):
            if typ == "tensor(string)":
                feeds[name] = np.asarray([[str(v) for v in row] for row in frame[cols].itertuples(index=False)], dtype=object)
            else:
                dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}[typ]
                feeds[name] = frame[cols].to_numpy(dtype=np.float64, na_value=np.nan).astype(dtype)
        return self._sess.run(None, feeds)

    def predict(self, frame: Any) -> Any:
        out = self._run(frame)[0]
        raw = self._np.asarray(out).reshape(len(frame))
        if self.classes is None:
            return raw.astype(self._np.float64)
        return self._np.asarray([v.decode() if isinstance(v, bytes) else v for v in raw.tolist()], dtype=object)

    def predict_proba(self, frame: Any) -> Any:
        return self._np.asarray(self._run(frame)[1], dtype=self._np.float64)


def from_onnx(loaded: LoadedModel, reference_data: Any, options: BuildOptions) -> Artifacts:
    import onnx
    from onnx import external_data_helper

    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    # Tensors were read from the external files at load; make the bundle's model self-contained.
    external_data_helper.convert_model_from_external_data(model)
    classification = len(model.graph.output) >= 2
    # Before ZipMap goes: it may be the only node that names the classes (MLP converters).
    classes = _classes(model) if classification else None
    _strip_zipmap(model)
    if classification and classes is None:
        raise ConversionError("the ONNX classifier declares no class labels (classlabels_* attribute); cannot map its labels")
    if reference_data is not None:
        reference_data = read_reference(reference_data, [])
    columns, per_input = _columns(model, loaded)
    original = _OriginalGraph(model, columns, per_input, classes)
    packed_model = onnx.ModelProto()
    packed_model.CopyFrom(model)
    packed_model, slots, onnx_inputs = pack(packed_model, per_input)
    normalise(packed_model)
    elem = {spec["dtype"] for spec in onnx_inputs}
    precision = "float64" if "float64" in elem else "float32"
    converted = Converted(
        onnx=packed_model, precision=precision, slots=slots, onnx_inputs=onnx_inputs, outputs=[o.name for o in packed_model.graph.output]
    )
    try:
        onnx.checker.check_model(packed_model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"packing the ONNX model's inputs broke it: {exc}") from exc
    base, real = reference_frames(reference_data, loaded.input_example, columns, options, categories={}, ranges={})
    tol = tolerance_for(classification, options)
    outcome = run_parity(
        original,
        columns,
        base,
        classification=classification,
        classes=classes,
        label_values=classes,
        tol=tol,
        options=replace(options, precisions=(precision,)),
        make=lambda _precision: converted,
    )
    complete = base[~base.isna().any(axis=1)].reset_index(drop=True)
    answers: Answers = Answers(labels=original.predict(complete)) if classification else Answers(prediction=original.predict(complete))
    predictions = answers.labels if classification else answers.prediction
    golden = golden_rows(outcome.rows, columns, outcome.nullable, options.golden_rows)
    producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown"
    return Artifacts(
        onnx_bytes=packed_model.SerializeToString(),
        converted=converted,
        columns=columns,
        classification=classification,
        classes=[json_value(c) for c in classes] if classes else None,
        label_values=classes,
        estimator="onnx",
        inputs=input_entries(columns, converted, outcome.nullable, categories={}, ranges={}, real=real, observed=reference_data is not None),
        parity=parity_record(outcome, tol, classification),
        golden=golden_record(original, golden, columns, classification, tol),
        baseline=baseline(base, columns, predictions, classification=classification, bins=options.histogram_bins,
                          synthesized=reference_data is None),
        producers={"original": producer},
        target_range=target_range_of(reference_data, options.target_column) if options.target_column and not classification else None,
    )
