"""A small side file that remembers the buffer's totals outside SQLite's WAL.

SQLite in WAL mode keeps every commit since the last checkpoint in ``<db>-wal`` only. If
that file is lost or damaged (a careless cleanup, a broken SD card, a restore that
copied the main file alone), SQLite opens the main file as it was at the last
checkpoint, which may be a brand-new, empty buffer, and nothing says that acknowledged
records are gone. So after every commit the writer also stores the cumulative counters
(``recorded``, ``delivered``, ...) in ``<db>-ledger``: 60 bytes written in place, with a
CRC, under the same cross-process lock as the commit, and ``fdatasync``-ed after each
``durability="power"`` commit (~0.2 ms per group of up to 1000 records).

It is written only after SQLite reports the commit durable, so it is never ahead of
what the database keeps, except when the WAL went missing. At open, a ledger ahead of
the database means commits were lost: ``telemetry.store`` counts the missing records as
``lost``, logs it as an error, and reports it home with the next batch.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

from .schema import LEDGER_COUNTERS

log = logging.getLogger("telemetry.buffer")

_MAGIC = b"EPKL"
_FORMAT = struct.Struct(f"<4sI{len(LEDGER_COUNTERS)}q")
_CRC = struct.Struct("<I")
_VERSION = 1


class Ledger:
    """The ``<db>-ledger`` file of one buffer (one per ``Store``)."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-ledger")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def read(self) -> dict[str, int] | None:
        """The totals last written, or None if there are none (new file) or they are unreadable."""
        raw = os.pread(self._fd, _FORMAT.size + _CRC.size, 0)
        if not raw:
            return None
        if len(raw) != _FORMAT.size + _CRC.size or zlib.crc32(raw[: _FORMAT.size]) != _CRC.unpack(raw[_FORMAT.size :])[0]:
            log.warning("%s is damaged (%d bytes, bad checksum); it is rewritten, a lost WAL cannot be detected this time", self.path, len(raw))
            return None
        magic, version, *values = _FORMAT.unpack(raw[: _FORMAT.size])
        if magic != _MAGIC or version != _VERSION:
            log.warning("%s is not an edgepack ledger (magic %r, version %d); it is rewritten", self.path, magic, version)
            return None
        return dict(zip(LEDGER_COUNTERS, values))

    def write(self, values: dict[str, int], *, sync: bool) -> None:
        """Store the totals; never raises (the commit it follows is already durable)."""
        body = _FORMAT.pack(_MAGIC, _VERSION, *(int(values.get(name, 0)) for name in LEDGER_COUNTERS))
        try:
            os.pwrite(self._fd, body + _CRC.pack(zlib.crc32(body)), 0)
            if sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            # Failing here must not fail the commit (the records are stored): it only
            # weakens the lost-WAL check until the next write succeeds.
            log.warning("could not update %s (%s); a lost WAL may go unnoticed until it is written again", self.path, exc)

    def close(self) -> None:
        os.close(self._fd)
