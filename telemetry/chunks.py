"""Chunks: how one commit group of records is stored, as one row of the ``chunks`` table.

The buffer's writer commits records in groups; each run of consecutive records of one
context (model, version, bundle, input names) becomes one chunk row, so SQLite's work
per record (a B-tree cell, an index entry, a statement step) is paid once per chunk:

* ``ids``: the records' UUIDs, 36 characters each, concatenated (ascending);
* ``ts``: their timestamps, little-endian float64, 8 bytes each;
* ``payload``: a MessagePack array of the records' ``[values, outputs, flags]``, built
  by prefixing an array header to the payloads ``record()`` packed (no re-encoding);
* ``id`` is the sequence number of the chunk's first record: a record's local row id is
  ``id + index`` (consecutive, never reused), so the sync service acknowledges records,
  not chunks;
* ``gone`` counts the leading records already delivered or dead-lettered (a batch may end
  inside a chunk); ``size`` the bytes still counted against ``max_bytes``.

Decoding is bounded (msgspec checks every declared length against the bytes present
before allocating) and all-or-nothing per chunk: a chunk that does not decode, or whose
ids, timestamps and payload disagree on the count, is a ``PayloadError`` and its records
are dead-lettered by the sync service.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

from .encoding import PayloadError

ID_LENGTH = 36
"""Characters of one UUID in ``ids``."""

RECORD_OVERHEAD = 96
"""Bytes counted per record on top of its payload against ``max_bytes`` (id, timestamp
and the chunk row's share; an overestimate, so the bound holds)."""

_chunk_decoder = msgspec.msgpack.Decoder(list[tuple[tuple[Any, ...], dict[Any, Any], tuple[Any, ...]]])
_framing_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(tuple[tuple[Any, ...], dict[Any, Any], tuple[Any, ...]])
_single_encode = msgspec.msgpack.Encoder().encode


def array_header(count: int) -> bytes:
    """The MessagePack header of an array of ``count`` items."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 65536:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def encode_payload(payloads: Sequence[bytes]) -> bytes:
    """The chunk payload of records packed by ``telemetry.encoding.pack``."""
    return b"".join((array_header(len(payloads)), *payloads))  # one copy of the bytes


def encode_ts(ts: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(ts)}d", *ts)


def decode(count: int, ids: str, ts: bytes, payload: bytes) -> tuple[list[str], tuple[float, ...], list[tuple[Any, Any, Any]]]:
    """The ids, timestamps and ``(values, outputs, flags)`` of a chunk's ``count`` records."""
    return _unpack(count, ids, ts, payload, _chunk_decoder)


def split(count: int, ids: str, ts: bytes, payload: bytes) -> tuple[list[str], tuple[float, ...], list[msgspec.Raw]]:
    """The ids, timestamps and packed bytes of a chunk's ``count`` records, each as
    ``pack`` stored it: what the sync service sends, without decoding the values (about
    a tenth of ``decode``'s cost). The framing is checked (every declared length against
    the bytes present, the count), not what the records hold: ``decode_record`` does that."""
    return _unpack(count, ids, ts, payload, _framing_decoder)


def _unpack(count: int, ids: str, ts: bytes, payload: bytes, decoder: msgspec.msgpack.Decoder[Any]) -> Any:
    if type(ids) is not str or len(ids) != ID_LENGTH * count:
        raise PayloadError(f"chunk ids hold {len(ids) if isinstance(ids, str) else '?'} characters, expected {ID_LENGTH} x {count}")
    if type(ts) is not bytes or len(ts) != 8 * count:
        raise PayloadError(f"chunk timestamps hold {len(ts) if isinstance(ts, bytes) else '?'} bytes, expected 8 x {count}")
    try:
        records = decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError, MemoryError, TypeError) as exc:
        raise PayloadError(f"stored chunk payload is unreadable: {exc}") from exc
    if len(records) != count:
        raise PayloadError(f"chunk payload holds {len(records)} records, expected {count}")
    return [ids[i : i + ID_LENGTH] for i in range(0, len(ids), ID_LENGTH)], struct.unpack(f"<{count}d", ts), records


def decode_record(packed: Any) -> tuple[Any, Any, Any] | None:
    """One record's ``(values, outputs, flags)`` from its packed bytes, or None when they
    do not decode as a record."""
    try:
        return _record_decoder.decode(packed)
    except (msgspec.DecodeError, RecursionError, MemoryError, TypeError):
        return None


def split_ids(ids: str) -> list[str]:
    """The UUIDs of a chunk's ``ids`` (whatever their count; for damaged chunks)."""
    return [ids[i : i + ID_LENGTH] for i in range(0, len(ids) - ID_LENGTH + 1, ID_LENGTH)] if isinstance(ids, str) else []


def repack(record: tuple[Any, Any, Any]) -> bytes:
    """One decoded record as ``pack`` stores it (for dead letters, kept per record)."""
    return _single_encode(record)
