"""Reading a request body within limits.

The size as sent is checked from ``Content-Length`` before anything is read, and again
while streaming (a client may lie or send chunked). A gzip body is decompressed while it
streams in, never asking zlib for more than the remaining allowance, so a gzip bomb costs
at most ``max_decompressed_bytes`` of memory before it is refused.

The body is parsed with orjson (several times faster than the ``json`` module on
float-heavy records); only a body orjson refuses is parsed again with ``json``, for the
same messages as ever and for the few things ``json`` alone reads (see ``decode_json``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from .errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType
from .exactness import loads_exact, may_underflow, refuse_inexact
from .settings import CollectorSettings

ENCODINGS = ("identity", "gzip")
SLICE = 1 << 20


def content_encoding(headers: Mapping[str, str]) -> str:
    """The body's encoding, ``identity`` or ``gzip``; anything else is a 415."""
    raw = headers.get("content-encoding", "").strip().lower()
    encoding = raw or "identity"
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"Content-Encoding {raw!r} is not supported; send identity (no header) or gzip")
    return encoding


def check_content_type(headers: Mapping[str, str]) -> None:
    """A body must be JSON; a missing ``Content-Type`` is taken to mean JSON."""
    raw = headers.get("content-type")
    if raw is None:
        return
    media_type = raw.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type {raw!r} is not supported; send application/json")


def check_declared_length(headers: Mapping[str, str], settings: CollectorSettings) -> None:
    """Refuse a body whose declared size is over the limit, before reading any of it."""
    raw = headers.get("content-length")
    if raw is None:
        return
    try:
        declared = int(raw)
    except ValueError as exc:
        raise MalformedBody(f"Content-Length {raw!r} is not a number of bytes") from exc
    if declared > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"body is {declared} bytes; at most {settings.max_body_bytes} bytes are accepted as sent, send smaller batches"
        )


class _Gunzip:
    """Incremental gzip decoder with a hard cap on its output; ``reserve`` accounts each piece."""

    def __init__(self, cap: int, reserve: Callable[[int], None]) -> None:
        self.cap = cap
        self.reserve = reserve
        self.size = 0
        self.parts: list[bytes] = []
        self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        while True:
            if self._decoder.eof:
                if data or self._decoder.unused_data:
                    raise MalformedBody("body has data after the end of the gzip stream; expected a single gzip member")
                return
            # Ask for one byte more than allowed (getting it proves the body is too big),
            # and at most a slice at a time: one huge output buffer would be grown by
            # reallocation, briefly costing twice its size.
            want = min(self.cap - self.size + 1, SLICE)
            try:
                piece = self._decoder.decompress(data, want)
            except zlib.error as exc:
                raise MalformedBody(f"body is not valid gzip ({exc}); expected Content-Encoding: gzip data") from exc
            self.size += len(piece)
            if self.size > self.cap:
                raise PayloadTooLarge(
                    f"body decompresses to more than {self.cap} bytes; at most {self.cap} are accepted, send smaller batches"
                )
            self.reserve(len(piece))
            self.parts.append(piece)
            data = self._decoder.unconsumed_tail
            # A full slice may leave output pending inside zlib even with no input left.
            if not data and len(piece) < want and not self._decoder.eof:
                return

    def finish(self) -> bytes:
        self.feed(b"")
        if not self._decoder.eof:
            raise MalformedBody("gzip body is truncated: the stream ended before the gzip trailer")
        return b"".join(self.parts)


def _unlimited(size: int) -> None:
    pass


async def read_body(
    chunks: AsyncIterator[bytes], encoding: str, settings: CollectorSettings, reserve: Callable[[int], None] = _unlimited
) -> bytes:
    """Collect the body from ``chunks``, undoing gzip, enforcing both size limits.

    ``reserve(n)`` is called for every ``n`` bytes kept in memory (after gzip), before
    more are read, so the caller can refuse a body the moment it would cross a limit.
    """
    received = 0
    gunzip = _Gunzip(settings.max_decompressed_bytes, reserve) if encoding == "gzip" else None
    parts: list[bytes] = []
    async for chunk in chunks:
        received += len(chunk)
        if received > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"body is over {settings.max_body_bytes} bytes as sent; at most {settings.max_body_bytes} are accepted, "
                "send smaller batches"
            )
        if gunzip is not None:
            gunzip.feed(chunk)
        else:
            reserve(len(chunk))
            parts.append(chunk)
    return gunzip.finish() if gunzip is not None else b"".join(parts)


def decode_json(body: bytes) -> Any:
    """Parse the body as JSON; anything unparseable is a 400.

    orjson reads strict JSON several times faster than the ``json`` module. What it
    refuses goes through ``json`` again: that gives the same 400 messages as ever for
    broken JSON, and what ``json`` alone accepts (NaN, Infinity, numbers beyond a double,
    unpaired surrogates, a byte order mark or UTF-16) is either refused with a 422 naming
    the value that cannot be stored exactly, or, if nothing like that is in it, accepted.
    A number too small for a double is refused on either path.
    """
    if not body:
        raise MalformedBody("body is empty; expected a JSON batch object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        # orjson reads a non-zero number below the smallest double (1e-400) as 0.0 without
        # a word: a body that may hold one is read again, exactly, to refuse it by name.
        if may_underflow(body):
            try:
                exact = loads_exact(body)
            except RecursionError as exc:
                raise MalformedBody("body JSON is nested too deeply; expected a flat batch object") from exc
            refuse_inexact(exact)
        return document
    try:
        document = loads_exact(body)
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not UTF-8 text ({exc.reason} at byte {exc.start}); expected JSON") from exc
    except ValueError as exc:
        raise MalformedBody(f"body is not valid JSON ({exc}); expected a JSON batch object") from exc
    except RecursionError as exc:
        raise MalformedBody("body JSON is nested too deeply; expected a flat batch object") from exc
    refuse_inexact(document)
    return document
