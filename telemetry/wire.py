"""What a batch looks like on the wire, and stepping down to what an older collector takes.

A batch goes out as the MessagePack batch (``PACKED_MEDIA_TYPE``, see ``telemetry.batch``
and ``docs/telemetry.md``) compressed with zstd when the ``zstandard`` package is
installed; otherwise with gzip. A collector older than either answers 415 naming what it
does not take (``Content-Encoding 'zstd' is not supported`` / ``Content-Type ... is not
supported``); the service then steps down, for the rest of its life, one thing at a time:
zstd to gzip, the packed batch to JSON, gzip to no compression. Every collector takes
JSON, so a device keeps syncing with any of them.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass

import msgspec

from .encoding import _msgpack_encode as _pack, to_json_bytes
from .options import SyncOptions

log = logging.getLogger("telemetry.sync")

JSON_MEDIA_TYPE = "application/json"
PACKED_MEDIA_TYPE = "application/vnd.edgepack.batch.v1+msgpack"
"""Version 1 of the MessagePack batch; a later layout gets a new media type, so an older
collector answers 415 and the device steps down instead of being misread."""



@dataclass(frozen=True)
class Body:
    """A request body ready to send."""

    data: bytes
    media_type: str
    encoding: str  # "zstd", "gzip" or "identity"
    carries_lost: bool  # the counters hold ``lost`` (which collectors before it refuse)


def _zstd_compressor(level: int) -> object | None:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard.ZstdCompressor(level=level)


class Wire:
    """The body format and compression this service sends, and how it steps down."""

    def __init__(self, options: SyncOptions) -> None:
        self.options = options
        self.packed = options.wire == "packed"
        self._zstd = _zstd_compressor(options.zstd_level) if options.zstd else None
        self.encoding = "zstd" if self._zstd is not None else ("gzip" if options.gzip else "identity")

    def fits(self, body: Body) -> bool:
        """Whether ``body`` (prepared earlier) is still in the format to send."""
        return body.encoding == self.encoding and body.media_type == self.media_type

    @property
    def media_type(self) -> str:
        return PACKED_MEDIA_TYPE if self.packed else JSON_MEDIA_TYPE

    def body(self, batch_id: str, records: bytes, counters: dict[str, int]) -> Body:
        """The body of a batch whose records are ``records`` (encoded for ``packed``)."""
        if self.packed:
            data = _pack({"batch_id": batch_id, "groups": msgspec.Raw(records), "counters": counters})
        else:
            data = b"".join((
                b'{"batch_id":"', batch_id.encode(), b'","records":', records, b',"counters":', to_json_bytes(counters), b"}",
            ))
        if self.encoding == "zstd":
            data = self._zstd.compress(data)  # type: ignore[attr-defined]
        elif self.encoding == "gzip":
            data = gzip.compress(data, compresslevel=self.options.gzip_level, mtime=0)
        return Body(data, self.media_type, self.encoding, "lost" in counters)

    def step_down(self, problem: str) -> bool:
        """After a 415 saying ``problem``: send something older from now on. False if
        there is nothing older to send."""
        says = problem.lower()
        if "content-encoding" in says and self.encoding != "identity":
            return self._encoding_down(problem)
        if "content-type" in says and self.packed:
            return self._json(problem)
        # A 415 that does not say which: the newest thing first.
        if self.encoding == "zstd":
            return self._encoding_down(problem)
        if self.packed:
            return self._json(problem)
        if self.encoding != "identity":
            return self._encoding_down(problem)
        return False

    def _encoding_down(self, problem: str) -> bool:
        was = self.encoding
        self.encoding = "gzip" if was == "zstd" and self.options.gzip else "identity"
        log.warning("collector does not accept %s (415: %s); sending %s from now on", was, problem,
                    "gzip" if self.encoding == "gzip" else "uncompressed")
        return True

    def _json(self, problem: str) -> bool:
        self.packed = False
        log.warning("collector does not accept the MessagePack batch (415: %s); sending JSON from now on", problem)
        return True
