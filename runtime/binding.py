"""One-row runs through onnxruntime's IOBinding, for the single-row hot path.

``InferenceSession.run`` costs about 4.5 µs per call on a small graph before the model
computes anything: it converts the feed dict and each numpy input to tensors and allocates
fresh numpy outputs. A one-row call always has the same shapes, so a ``RowSlot`` binds its
own preallocated input and output buffers once; a call then packs the validated values
straight into the input buffers (``struct.pack_into``, no numpy call), runs, and reads the
results out of the output buffers (about 2.8 µs for the same graph).

Buffers are never shared by two calls in flight: each call takes a slot from a pool
(``list.pop`` and ``list.append`` are atomic), so threads and re-entrant callers each get
their own; the pool grows to the number of calls ever in flight at once. onnxruntime runs
one session from many threads with one IOBinding per thread.

Only graphs whose inputs and outputs are all fixed-width numbers qualify: onnxruntime binds
no string tensors. A graph with a string input or output keeps ``Session.run``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from .features import PackedInput
from .session import Session

T = TypeVar("T")

_STRUCT_CODES = {np.dtype(np.float32): "f", np.dtype(np.float64): "d", np.dtype(np.int64): "q"}
"""Tensor dtype -> struct format code (native byte order, standard size, like numpy's)."""

PACK_ERRORS = (struct.error, OverflowError, TypeError, ValueError)
"""What packing a value that does not fit its buffer raises (the caller then takes the
``numpy.array`` path, which names the feature)."""


class RowSlot:
    """One IOBinding with its own buffers: used by one call at a time."""

    __slots__ = ("packers", "outputs", "_binding", "_run")

    def __init__(self, session: Session, packed: Sequence[PackedInput], shapes: Sequence[tuple[str, np.dtype, tuple[int, ...]]]) -> None:
        binding = session.ort.io_binding()
        packers: list[tuple[Callable[..., None], np.ndarray]] = []
        for p in packed:
            dtype = np.dtype(p.dtype)
            buffer = np.zeros((1, p.width), dtype=dtype)
            binding.bind_input(p.name, "cpu", 0, dtype, [1, p.width], buffer.ctypes.data)
            packers.append((struct.Struct(f"={p.width}{_STRUCT_CODES[dtype]}").pack_into, buffer))
        outputs: list[np.ndarray] = []
        for name, dtype, shape in shapes:
            buffer = np.zeros(shape, dtype=dtype)
            binding.bind_output(name, "cpu", 0, dtype, list(shape), buffer.ctypes.data)
            outputs.append(buffer)
        # The buffers stay referenced by this slot for as long as the binding points at them.
        self.packers = tuple(packers)
        self.outputs = outputs
        self._binding = binding
        self._run = session.iobinding_runner(binding)

    def run(self, values: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        for (pack, buffer), vals in zip(self.packers, values):
            pack(buffer, 0, *vals)
        self._run()
        return self.outputs


class RowBinding:
    """A pool of ``RowSlot``s over one session. Thread-safe."""

    def __init__(self, session: Session, packed: Sequence[PackedInput], shapes: Sequence[tuple[str, np.dtype, tuple[int, ...]]]) -> None:
        self._session = session
        self._packed = tuple(packed)
        self._shapes = tuple(shapes)
        self._pool: list[RowSlot] = []

    @classmethod
    def for_outputs(cls, session: Session, packed: Sequence[PackedInput], names: Sequence[str], probe: Sequence[Any]) -> RowBinding | None:
        """A binding for ``names``, shaped like ``probe`` (the outputs of a plain one-row run),
        or None when the graph cannot be bound (a string tensor, a non-tensor output, a
        provider other than the CPU)."""
        if not session.cpu_only or any(np.dtype(p.dtype) not in _STRUCT_CODES for p in packed):
            return None
        shapes = []
        for name, out in zip(names, probe):
            if not isinstance(out, np.ndarray) or out.dtype.kind not in "biuf" or out.size == 0:
                return None
            shapes.append((name, out.dtype, tuple(out.shape)))
        return cls(session, packed, shapes)

    def run(self, values: Sequence[Sequence[Any]], finish: Callable[[list[np.ndarray], T], Any], extra: T) -> Any:
        """Pack ``values`` (one sequence per packed input), run, and return
        ``finish(outputs, extra)``, which must copy what it keeps: the output buffers are
        reused by the next call. Raises ``PACK_ERRORS`` or ``Session.errors`` as they come."""
        pool = self._pool
        try:
            slot = pool.pop()
        except IndexError:
            slot = RowSlot(self._session, self._packed, self._shapes)
        result = finish(slot.run(values), extra)
        # Only a slot whose call went through goes back: one that raised is dropped.
        pool.append(slot)
        return result

    def disagreement(self, rows: Iterable[Sequence[Sequence[Any]]], plain: Callable[[Sequence[Sequence[Any]]], Any], finish: Callable[[list[np.ndarray], list[Any]], Any]) -> str | None:
        """Why this binding must not be used, or None: it must answer every row of
        validated ``rows`` exactly as ``plain(values)`` (``InferenceSession.run``) does."""
        for values in rows:
            expected = plain(values)
            try:
                bound = self.run(values, finish, [])
            except PACK_ERRORS + Session.errors as exc:
                return f"it fails: {exc}"
            if bound != expected and repr(bound) != repr(expected):  # repr: NaN == NaN
                return f"it answers {bound!r} where InferenceSession.run answers {expected!r}"
        return None
