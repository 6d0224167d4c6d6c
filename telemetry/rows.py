"""The shapes records take between the writer and the file: runs in, stored records out."""

from __future__ import annotations

from typing import Any, NamedTuple

from .chunks import RECORD_OVERHEAD, decode_record
from .encoding import pack_names

ROW_OVERHEAD = RECORD_OVERHEAD
"""Bytes counted per record on top of its payload (see ``telemetry.chunks``)."""


class StoredRecord(NamedTuple):
    """One pending record as read back from the file (a named tuple: the sync service
    reads thousands per batch, and a frozen dataclass costs ~1 µs more each to build)."""

    rowid: int
    """Local row id: the record's sequence number in the file (never reused)."""
    id: str
    """The record's UUID, its identity at the collector forever."""
    ts: float
    """Unix seconds (UTC) when ``record()`` was called."""
    model: str
    """Model name."""
    version: str
    """Model version."""
    bundle_sha256: str
    """SHA-256 of the bundle that made the prediction."""
    input_names: tuple[str, ...]
    """Names of the input values, shared by every record of the same context."""
    payload: tuple[Any, Any, Any] | None
    """``(input values, outputs, flags)`` decoded from the record's chunk; None when the
    chunk (or its context) is unreadable: the sync service dead-letters the record."""


class PackedRecord(NamedTuple):
    """A pending record as the sync service reads it: like ``StoredRecord``, but its
    payload stays the MessagePack bytes ``record()`` packed (a slice of its chunk), sent
    home as they are instead of decoded and encoded again."""

    rowid: int
    id: str
    ts: float
    model: str
    version: str
    bundle_sha256: str
    input_names: tuple[str, ...]
    packed: Any
    """The record's packed ``[values, outputs, flags]`` (a ``msgspec.Raw``); None when its
    chunk (or context) is unreadable."""

    @property
    def payload(self) -> tuple[Any, Any, Any] | None:
        """``(input values, outputs, flags)``, decoded now; None when the bytes do not
        decode as a record of ``input_names``."""
        record = None if self.packed is None else decode_record(self.packed)
        return record if record is not None and len(record[0]) == len(self.input_names) else None


class Context:
    """What records of one model and input layout share: stored once, referenced by id."""

    __slots__ = ("model", "version", "bundle_sha256", "names", "blob", "id", "generation")

    def __init__(self, model: str, version: str, bundle_sha256: str, names: tuple[str, ...]) -> None:
        self.model = model
        self.version = version
        self.bundle_sha256 = bundle_sha256
        self.names = names
        self.blob = pack_names(names)
        self.id: int | None = None  # known once resolved inside a write transaction
        self.generation = -1  # the Store generation (file) ``id`` belongs to: a salvage starts a new one


class Run:
    """Consecutive records of one context in a commit group: they become one chunk."""

    __slots__ = ("context", "ids", "ts", "payloads", "size")

    def __init__(self, context: Context) -> None:
        self.context = context
        self.ids: list[str] = []
        self.ts: list[float] = []
        self.payloads: list[bytes] = []
        self.size = 0
        """Bytes counted against ``max_bytes``: payloads plus ``ROW_OVERHEAD`` each."""
