"""Which features the row path validates together, and how their values become the feed.

The row path checks the features of one packed ONNX input in a few C-level passes, which
needs them to share a dtype. Without encoded features (``runtime.encodings``) every packed
input carries one dtype, the groups are the packed inputs themselves and a row's validated
values are already its feed values. An encoded string feature sits in a float input among
numbers: the groups then split each packed input by feature dtype, and an assembler lays
the validated values (strings encoded) out in the input's slot order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .encodings import Encoding, Values, row_assembler
from .features import DTYPES, PackedInput

Assembler = Callable[[Values], list[list[Any]]]


def layout(packed: Sequence[PackedInput]) -> tuple[tuple[PackedInput, ...], Assembler | None]:
    """(validation groups, the assembler of feed values or None when they are the values)."""
    if not any(f.encoding is not None for p in packed for f in p.features):
        return tuple(packed), None
    groups: list[PackedInput] = []
    where: dict[str, tuple[int, int]] = {}  # feature name -> (group, position in it)
    for p in packed:
        by_dtype: dict[str, list[Any]] = {}
        for f in p.features:  # in slot order
            by_dtype.setdefault(f.dtype, []).append(f)
        for dtype, members in by_dtype.items():
            for k, f in enumerate(members):
                where[f.name] = (len(groups), k)
            groups.append(PackedInput(name=p.name, dtype=DTYPES[dtype], width=len(members), features=tuple(members)))
    steps: list[list[tuple[int, int, int, Encoding | None]]] = []
    for p in packed:
        input_steps: list[tuple[int, int, int, Encoding | None]] = []
        for f in p.features:
            group, k = where[f.name]
            last = input_steps[-1] if input_steps else None
            if f.encoding is None and last is not None and last[3] is None and last[0] == group and last[2] == k:
                input_steps[-1] = (group, last[1], k + 1, None)  # one slice for a run of plain values
            else:
                input_steps.append((group, k, k + 1, f.encoding))
        steps.append(input_steps)
    return tuple(groups), row_assembler(steps)


def assembly_problem(schema: Any, columns: dict[str, list[Any]], rows: int = 16) -> str | None:
    """Why the row path's feed (the assembler's) differs from the column path's for one of the
    first ``rows`` rows of ``columns`` (golden rows), or None: two ways to encode the same
    strings must give the same floats, or the one-row path would answer differently."""
    import numpy as np

    from .errors import InputError

    feeds, _, _ = schema.pack_columns(columns, False)
    for i in range(min([rows, *(len(col) for col in columns.values())])):
        try:
            values, _ = schema.row_values({name: col[i] for name, col in columns.items()}, False)
        except InputError:
            continue  # not a row the row path would run
        for name, array in schema.feeds_of(values).items():
            if not np.array_equal(array[0], feeds[name][i], equal_nan=True):
                return f"row {i}: the one-row feed of {name!r} is {array[0].tolist()}, the batch feed {feeds[name][i].tolist()}"
    return None
