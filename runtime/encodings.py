"""Features the runtime encodes itself before the graph sees them: a manifest input's optional
``encoding`` (docs/bundle-format.md, "Encoded inputs").

A bundle whose graph starts with a one-hot encoder of its string columns spends most of a
single-row run on string tensors inside onnxruntime (building them, hashing them in a
``LabelEncoder``, gathering and comparing codes), and a string input also rules out the
one-row IOBinding path. The packager may instead cut the graph where the one-hot floats
come out, and declare per string feature ``"encoding": {"kind": "one_hot", "categories":
[...]}``: the feature still takes strings from the caller (validated, flagged and recorded
as strings), and the runtime feeds ``len(categories)`` float slots of its ``onnx_input``
from ``slot`` on, slot ``slot + k`` being 1.0 when the string equals ``categories[k]`` and
0.0 otherwise. Any other string (unknown, or a missing value's ``missing_string`` that is
no category) gives all zeros: what the cut-off encoder gave (``handle_unknown="ignore"``).

A bundle without the field is fed exactly as before. A kind this runtime does not know
is refused with a ``BundleError`` naming ``inputs[i].encoding``: a newer packager may
encode in a way this runtime would feed wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BundleError

MANIFEST = "manifest.json"
KINDS = ("one_hot",)
"""Encoding kinds this runtime feeds."""
CARRIERS = ("float32", "float64")
"""Tensor dtypes a one-hot encoding may be fed in."""


@dataclass(frozen=True, kw_only=True)
class Encoding:
    """How the runtime feeds one feature's value to the graph."""

    kind: str
    """``one_hot``."""
    categories: tuple[str, ...]
    """``one_hot``: the string each slot stands for, in slot order."""

    @property
    def width(self) -> int:
        """How many slots of its ``onnx_input`` the feature fills."""
        return len(self.categories)

    def table(self) -> tuple[dict[str, tuple[float, ...]], tuple[float, ...]]:
        """(string -> its slots' values, the slots of any other string)."""
        zeros = (0.0,) * self.width
        hot = {c: tuple(1.0 if j == k else 0.0 for j in range(self.width)) for k, c in enumerate(self.categories)}
        return hot, zeros

    def block(self, column: np.ndarray, dtype: Any) -> np.ndarray:
        """The ``(N, width)`` slots of a column of strings (an object array)."""
        wanted = np.empty(self.width, dtype=object)
        wanted[:] = self.categories
        return (np.asarray(column, dtype=object).reshape(-1, 1) == wanted.reshape(1, -1)).astype(dtype)


def parse_encoding(index: int, name: str, raw: Any, dtype: str) -> Encoding | None:
    """The ``encoding`` of manifest input ``index`` (None when absent or null)."""
    if raw is None:
        return None
    where = f"inputs[{index}].encoding ({name!r})"
    if not isinstance(raw, dict):
        raise BundleError(f"{where} must be an object with a 'kind', got {raw!r}", entry=MANIFEST)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise BundleError(
            f"{where} has kind {kind!r}, which this runtime does not know (it knows: {', '.join(KINDS)}); "
            "the bundle was built by a newer packager: upgrade edgepack on the device, or rebuild the bundle with this version",
            entry=MANIFEST,
        )
    if extra := sorted(set(raw) - {"kind", "categories"}):
        raise BundleError(
            f"{where} has field(s) {', '.join(extra)} that this runtime does not know for kind {kind!r} (it reads kind, categories)",
            entry=MANIFEST,
        )
    categories = raw.get("categories")
    if dtype != "string":
        raise BundleError(f"{where}: a one_hot encoding is for a string feature, this one is {dtype}", entry=MANIFEST)
    if (
        not isinstance(categories, list)
        or not categories
        or not all(isinstance(c, str) for c in categories)
        or len(set(categories)) != len(categories)
    ):
        raise BundleError(f"{where}.categories must be a non-empty list of distinct strings, got {categories!r}", entry=MANIFEST)
    return Encoding(kind=kind, categories=tuple(categories))


Values = Sequence[Sequence[Any]]
"""Validated values of one row, one sequence per validation group."""


def row_assembler(steps: Sequence[Sequence[tuple[int, int, int, Encoding | None]]]) -> Callable[[Values], list[list[Any]]]:
    """One row's feed values, one list per packed ONNX input, from its validated values.

    ``steps[i]`` lists what fills packed input ``i``, in slot order: ``(group, start, stop,
    None)`` copies ``values[group][start:stop]``, ``(group, position, _, encoding)`` encodes
    ``values[group][position]``."""
    plans = []
    for input_steps in steps:
        plan = []
        for group, start, stop, encoding in input_steps:
            if encoding is None:
                plan.append((group, start, stop, None, ()))
            else:
                hot, zeros = encoding.table()
                plan.append((group, start, stop, hot, zeros))
        plans.append(tuple(plan))

    def assemble(values: Values) -> list[list[Any]]:
        out = []
        for plan in plans:
            feed: list[Any] = []
            extend = feed.extend
            for group, start, stop, hot, zeros in plan:
                if hot is None:
                    extend(values[group][start:stop])
                else:
                    extend(hot.get(values[group][start], zeros))
            out.append(feed)
        return out

    return assemble
