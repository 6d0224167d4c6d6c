"""One original input feature of a model, as the manifest describes it, and its parsing.

``runtime.schema`` builds the per-call tables from these; this module only reads and
checks the manifest's ``inputs`` entries, naming the entry and the field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .encodings import Encoding, parse_encoding
from .errors import BundleError

MANIFEST = "manifest.json"
DTYPES: Mapping[str, Any] = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "string": object}
"""Manifest dtype -> numpy dtype of the packed tensor."""
KINDS = ("numeric", "categorical")

class _Anything:
    """A category set that contains every value (a string feature without known categories)."""

    def __contains__(self, value: object) -> bool:
        return True


ANY_VALUE = _Anything()
"""The category set of a string feature without known categories."""


class AllBut:
    """A category set that contains every value but one: a nullable string feature without
    known categories, whose ``missing_string`` stands for a missing value and is no input."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __contains__(self, value: object) -> bool:
        return value != self.value


def reserved(f: Feature) -> str | None:
    """The string that stands for a missing value of ``f`` in the graph and that callers may
    not send, or None. Bundles built before ``SENTINEL`` (packager/missing_strings.py) use
    ``""``, which callers do send; it stays accepted there, as before."""
    return f.missing_string if f.dtype == "string" and f.nullable and f.missing_string else None


PLAIN_NUMBERS = frozenset((float, int))
FLOAT_MAX = float(np.finfo(np.float64).max)
# Largest magnitude each numeric tensor type holds; beyond it (and infinity) a value would
# silently become inf, which the original model would have refused.
FIT = {"float32": float(np.finfo(np.float32).max), "float64": FLOAT_MAX, "int64": float(2**63)}
PLAIN_STRINGS = frozenset((str,))

Flags = list[str]
RowFlags = dict[int, Flags]
"""Flags of a batch: row index -> that row's flags, only for rows that have any."""


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One original input feature, as the manifest describes it."""

    name: str
    """Original column name (what callers use as the key)."""
    onnx_input: str
    """The packed ONNX input that carries this feature."""
    slot: int
    """Column index inside ``onnx_input``."""
    dtype: str
    """``float32``, ``float64``, ``int64`` or ``string``."""
    kind: str
    """``numeric`` or ``categorical``."""
    nullable: bool
    """Whether None/NaN is accepted (numeric: goes in as NaN; string: goes in as ``missing_string``)."""
    range: tuple[float, float] | None
    """Training min/max for numeric features, None when unknown."""
    categories: tuple[Any, ...] | None
    """Known training values for categorical features, in their original type."""
    missing_string: str = ""
    """A nullable string feature: what None/NaN goes into the model as (the packager's sentinel)."""
    encoding: Encoding | None = None
    """How the runtime feeds the value (``runtime.encodings``); None: as it is, in one slot."""

    @property
    def width(self) -> int:
        """How many slots of ``onnx_input`` the feature fills from ``slot`` on."""
        return 1 if self.encoding is None else self.encoding.width

    @property
    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.dtype == "string":
            text = "a string"
        elif self.dtype == "int64":
            text = "an integer"
        else:
            text = "a number"
        if self.categories is not None:
            shown = ", ".join(repr(c) for c in self.categories[:10])
            more = ", ..." if len(self.categories) > 10 else ""
            text += f" (known values: {shown}{more})"
        elif self.range is not None:
            text += f" (training range {self.range[0]:g} to {self.range[1]:g})"
        if self.nullable:
            text += " or missing (null/None)"
        return text


def manifest_error(message: str) -> BundleError:
    """A ``BundleError`` about ``manifest.json``."""
    return BundleError(message, entry=MANIFEST)


def parse_feature(index: int, raw: Any) -> Feature:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise manifest_error(f"{where} must be an object with name, onnx_input, slot, dtype, kind")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise manifest_error(f"{where}.name must be a non-empty string, got {name!r}")
    where = f"inputs[{index}] ({name!r})"
    onnx_input, slot, dtype, kind = raw.get("onnx_input"), raw.get("slot"), raw.get("dtype"), raw.get("kind")
    if not isinstance(onnx_input, str):
        raise manifest_error(f"{where}.onnx_input must be a string, got {onnx_input!r}")
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        raise manifest_error(f"{where}.slot must be an int >= 0, got {slot!r}")
    if dtype not in DTYPES:
        raise manifest_error(f"{where}.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if kind not in KINDS:
        raise manifest_error(f"{where}.kind must be 'numeric' or 'categorical', got {kind!r}")
    nullable = raw.get("nullable", False)
    if not isinstance(nullable, bool):
        raise manifest_error(f"{where}.nullable must be true or false, got {nullable!r}")
    if nullable and dtype == "int64":
        raise manifest_error(f"{where} is int64 and nullable, but an int64 tensor cannot carry a missing value")
    if dtype == "string" and kind != "categorical":
        raise manifest_error(f"{where} is a string feature, so its kind must be 'categorical'")
    span = raw.get("range")
    if span is not None:
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in span)
            or span[0] > span[1]
        ):
            raise manifest_error(f"{where}.range must be [min, max] numbers or null, got {span!r}")
        span = (float(span[0]), float(span[1]))
    categories = raw.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            raise manifest_error(f"{where}.categories must be a list or null, got {type(categories).__name__}")
        if dtype == "string" and not all(isinstance(c, str) for c in categories):
            raise manifest_error(f"{where}.categories must all be strings for a string feature")
        categories = tuple(categories)
    # What a missing string goes in as: the string the converted graph's imputer looks for.
    missing_string = raw.get("missing_string", "")
    if not isinstance(missing_string, str) or ("missing_string" in raw and not (dtype == "string" and nullable)):
        raise manifest_error(f"{where}.missing_string must be a string, and only on a nullable string feature; got {missing_string!r}")
    return Feature(
        name=name,
        onnx_input=onnx_input,
        slot=slot,
        dtype=dtype,
        kind=kind,
        nullable=nullable,
        range=span,
        categories=categories,
        missing_string=missing_string,
        encoding=parse_encoding(index, name, raw.get("encoding"), dtype),
    )


@dataclass(frozen=True)
class PackedInput:
    """One packed ONNX input: the same-typed features it carries, in slot order."""

    name: str
    dtype: Any
    width: int
    features: tuple[Feature, ...]  # in slot order
