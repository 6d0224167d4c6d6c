"""Reading a request body within limits.

The size as sent is checked from ``Content-Length`` before anything is read, and again
while streaming (a client may lie or send chunked). A gzip body is decompressed while it
streams in, never asking zlib for more than the remaining allowance, so a gzip bomb costs
at most ``max_decompressed_bytes`` of memory before it is refused. A zstd body
(``Content-Encoding: zstd``, what edgepack devices send when the ``zstandard`` package is
installed) is decompressed the same way, under the same cap, by a decoder whose window is
bounded (``ZSTD_MAX_WINDOW``): a frame asking for a larger window, or declaring more
content than the cap, is refused before zstd allocates anything for it.

Two body types are read (``media_type``): JSON (``application/json``, any client) and the
MessagePack batch edgepack devices send (``home.packed``, ``PACKED_MEDIA_TYPE``).

The body is parsed with orjson (several times faster than the ``json`` module on
float-heavy records); only a body orjson refuses is parsed again with ``json``, for the
same messages as ever and for the few things ``json`` alone reads (see ``decode_json``).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from .errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType
from .exactness import loads_exact, may_underflow, refuse_inexact
from .settings import CollectorSettings

ENCODINGS = ("identity", "gzip", "zstd")
SLICE = 1 << 20
ZSTD_FEED = 256
ZSTD_MAX_WINDOW = 8 << 20
"""Largest zstd window a body may ask for (zstd's levels up to 19 use at most 8 MiB; a
hostile frame may declare up to 2 GiB, which the decompressor would allocate)."""
JSON_MEDIA_TYPE = "application/json"
PACKED_MEDIA_TYPE = "application/vnd.edgepack.batch.v1+msgpack"
"""The MessagePack batch of ``home.packed`` (version 1 of its layout)."""
MEDIA_TYPES = (JSON_MEDIA_TYPE, PACKED_MEDIA_TYPE)


def content_encoding(headers: Mapping[str, str]) -> str:
    """The body's encoding, one of ``ENCODINGS``; anything else is a 415."""
    raw = headers.get("content-encoding", "").strip().lower()
    encoding = raw or "identity"
    if encoding not in ENCODINGS or (encoding == "zstd" and not zstd_available()):
        offered = [e for e in ENCODINGS if e != "zstd" or zstd_available()]
        raise UnsupportedMediaType(
            f"Content-Encoding {raw!r} is not supported; send identity (no header) or {' or '.join(offered[1:])}"
        )
    return encoding


def check_content_type(headers: Mapping[str, str], media_types: tuple[str, ...] = (JSON_MEDIA_TYPE,)) -> str:
    """The body's media type, one of ``media_types``; a missing ``Content-Type`` is taken
    to mean JSON."""
    raw = headers.get("content-type")
    if raw is None:
        return JSON_MEDIA_TYPE
    media_type = raw.split(";", 1)[0].strip().lower()
    if media_type not in media_types:
        raise UnsupportedMediaType(f"Content-Type {raw!r} is not supported; send {' or '.join(media_types)}")
    return media_type


@functools.cache
def zstd_available() -> bool:
    """Whether the ``zstandard`` package is installed (it comes with ``edgepack[collector]``)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


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


class _Unzstd:
    """Incremental zstd decoder with a hard cap on its output and on the window a frame
    may ask for; ``reserve`` accounts each piece.

    python-zstandard's incremental decoder has no output limit per call, so input is fed
    ``ZSTD_FEED`` bytes at a time: zstd's densest block (RLE, 4 bytes) makes at most
    128 KiB, so one feed makes at most ``ZSTD_FEED / 4 * 128 KiB`` (8 MiB) before the cap
    is checked again. A frame that declares its content size (devices' frames do), within
    the cap, is fed as it arrives instead: zstd stops with an error rather than write past
    the size declared. One frame per body, like one gzip member."""

    def __init__(self, cap: int, reserve: Callable[[int], None]) -> None:
        import zstandard

        self.cap = cap
        self.reserve = reserve
        self.size = 0
        self.parts: list[bytes] = []
        self.started = False
        self._step = ZSTD_FEED
        self._error = zstandard.ZstdError
        self._decoder = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj(write_size=SLICE)
        self._frame_size = zstandard.frame_content_size

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if not self.started:
            self.started = True
            try:
                declared = self._frame_size(data)  # the frame's declared content size, -1 if absent
            except self._error:
                declared = -1  # not a full frame header here: the decoder says what is wrong
            if declared > self.cap:
                raise PayloadTooLarge(
                    f"zstd body declares {declared} bytes of content; at most {self.cap} are accepted, send smaller batches"
                )
            if declared >= 0:
                # zstd refuses to decode past the declared size (an error, not more output),
                # so a frame that declares it, within the cap, is fed as it comes: a
                # 256-byte feed costs a call per 256 bytes, most of the decoding time.
                self._step = 1 << 62
        view = memoryview(data)
        for start in range(0, len(view), self._step):
            if self._decoder.eof:
                raise MalformedBody("body has data after the end of the zstd frame; expected a single zstd frame")
            try:
                piece = self._decoder.decompress(view[start : start + self._step])
            except self._error as exc:
                raise MalformedBody(
                    f"body is not valid zstd ({exc}); expected Content-Encoding: zstd data, one frame with a window "
                    f"of at most {ZSTD_MAX_WINDOW} bytes"
                ) from exc
            self.size += len(piece)
            if self.size > self.cap:
                raise PayloadTooLarge(
                    f"body decompresses to more than {self.cap} bytes; at most {self.cap} are accepted, send smaller batches"
                )
            if piece:
                self.reserve(len(piece))
                self.parts.append(piece)
        if self._decoder.eof and self._decoder.unused_data:
            raise MalformedBody("body has data after the end of the zstd frame; expected a single zstd frame")

    def finish(self) -> bytes:
        if not self._decoder.eof:
            raise MalformedBody("zstd body is not valid zstd: truncated, the stream ended before the end of its frame")
        return b"".join(self.parts)


def _unlimited(size: int) -> None:
    pass


async def read_body(
    chunks: AsyncIterator[bytes], encoding: str, settings: CollectorSettings, reserve: Callable[[int], None] = _unlimited
) -> bytes:
    """Collect the body from ``chunks``, undoing gzip or zstd, enforcing both size limits.

    ``reserve(n)`` is called for every ``n`` bytes kept in memory (after gzip), before
    more are read, so the caller can refuse a body the moment it would cross a limit.
    """
    received = 0
    gunzip: _Gunzip | _Unzstd | None = None
    if encoding == "gzip":
        gunzip = _Gunzip(settings.max_decompressed_bytes, reserve)
    elif encoding == "zstd":
        gunzip = _Unzstd(settings.max_decompressed_bytes, reserve)
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
