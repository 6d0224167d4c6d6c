"""The manifest of docs/bundle-format.md, from the artifacts of a conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import registry
from .convert import Column, Converted
from .golden import json_value


@dataclass
class Artifacts:
    """Everything the sklearn or onnx path hands to the bundle writer."""

    onnx_bytes: bytes
    """The serialised, packed ONNX model that passed parity."""
    converted: Converted
    """The same model with its input layout and output names."""
    columns: list[Column]
    """Original input columns, in training order."""
    classification: bool
    """True for classifiers."""
    classes: list[Any] | None
    """Class labels in their original type (classifiers)."""
    label_values: list[Any] | None
    """The ONNX label tensor's value for each class."""
    estimator: str
    """Class name of the original model (``onnx`` for the onnx flavor)."""
    inputs: list[dict[str, Any]]
    """The manifest's ``inputs``."""
    parity: dict[str, Any]
    """The manifest's ``parity``."""
    golden: dict[str, Any]
    """The content of golden.json."""
    baseline: dict[str, Any]
    """The manifest's ``baseline``."""
    producers: dict[str, str]
    """Versions of the tools that produced the ONNX model."""
    target_range: list[float] | None = None
    """Regression: training target min/max, when known."""
    converters: list[dict[str, str]] = field(default_factory=list)
    """Which converter handled each step: ``{"step", "estimator", "converter"}`` in walk order."""
    label_only: bool = False
    """A classifier without ``predict_proba``: the bundle answers labels, no probabilities."""


def manifest(resolved: registry.ResolvedModel, flavor: str, art: Artifacts, version: str) -> dict[str, Any]:
    import onnx

    onx = art.converted.onnx
    conv = art.converted
    if art.classification:
        outputs = {
            "task": "classification",
            "classes": art.classes,
            "label": conv.outputs[0],
            "label_values": art.label_values,
            # A label-only classifier (no predict_proba in the original) has no probabilities.
            "label_only": art.label_only,
            "probabilities": None if art.label_only else conv.outputs[1],
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
            "converters": art.converters,
        },
        "parity": art.parity,
        "baseline": art.baseline,
    }


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
                cats = [json_value(v) for v in categories[col.name]]
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
                # Only where the runtime encodes the value itself: older bundles lack the key.
                **({"encoding": conv.encodings[col.name]} if col.name in conv.encodings else {}),
            }
        )
    return entries
