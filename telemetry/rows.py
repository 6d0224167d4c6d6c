"""The shapes a record takes between the writer and the file: rows in, stored records out."""

from __future__ import annotations

from typing import NamedTuple

from .encoding import pack_names

ROW_OVERHEAD = 96
"""Bytes counted per record on top of its payload: uuid, timestamp, row and index slack."""


class StoredRecord(NamedTuple):
    """One pending record as read back from the file (a named tuple: the sync service
    reads thousands per batch, and a frozen dataclass costs ~1 µs more each to build)."""

    rowid: int
    """Local row id (AUTOINCREMENT: never reused)."""
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
    payload: bytes
    """``(input values, outputs, flags)`` as packed by ``telemetry.encoding.pack``."""


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


Row = tuple[str, float, Context, bytes, int]
"""A record ready to insert: (uuid, ts, context, payload, size). A plain tuple because
the writer builds one per record on the hot path."""
