"""A small side file that remembers the buffer's totals outside SQLite's WAL.

SQLite in WAL mode keeps every commit since the last checkpoint in ``<db>-wal`` only. If
that file is lost or damaged (a careless cleanup, a broken SD card, a restore that
copied the main file alone), SQLite opens the main file as it was at the last
checkpoint, which may be a brand-new, empty buffer, and nothing says that acknowledged
records are gone. So after every commit the writer also stores the cumulative counters
(``recorded``, ``delivered``, ...) in ``<db>-ledger``: 60 bytes written in place, with a
CRC, under the same cross-process lock as the commit. With ``durability="power"`` it is
also ``fdatasync``-ed, at most once per ``SYNC_INTERVAL`` (and at open and close): a sync
per group commit measured 0.2 ms idle but 2-3 ms on a loaded machine, a third of the
commit itself. The write reaches the page cache at every commit, so a WAL deleted or
damaged while the system runs is always caught; only a power cut that also destroys
the WAL can hide up to ``SYNC_INTERVAL`` of commits from the check.

It is written only after SQLite reports the commit durable, so it is never ahead of
what the database keeps, except when the WAL went missing. At open, a ledger ahead of
the database means commits were lost: ``telemetry.store`` counts the missing records as
``lost``, logs it as an error, and reports it home with the next batch.

Version 2 also stores the identity of the buffer file it belongs to (the ``identity`` row
of ``counters``, see ``telemetry.schema``), so a ledger left behind when
``predictions.db`` was deleted to start afresh is recognised as another file's and
rewritten, instead of reporting every old record as lost. Identity 0 means "not known
to be in the main file yet" and, like a version-1 ledger (which has none), is compared
with whatever file is there.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path

from .schema import LEDGER_COUNTERS

log = logging.getLogger("telemetry.buffer")

_MAGIC = b"EPKL"
_HEAD = struct.Struct("<4sI")
_FORMATS = {
    1: struct.Struct(f"<4sI{len(LEDGER_COUNTERS)}q"),  # magic, version, counters
    2: struct.Struct(f"<4sIq{len(LEDGER_COUNTERS)}q"),  # magic, version, identity, counters
}
_CRC = struct.Struct("<I")
_VERSION = 2
_FORMAT = _FORMATS[_VERSION]

SYNC_INTERVAL = 1.0
"""Most seconds between two ``fdatasync`` of the ledger while commits keep coming."""


class Ledger:
    """The ``<db>-ledger`` file of one buffer (one per ``Store``)."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-ledger")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._synced_at = float("-inf")
        self._unsynced = False
        self.identity = 0
        """The buffer file's identity written with the totals (0: not known to be durable yet)."""

    def read(self) -> tuple[int, dict[str, int]] | None:
        """The identity and totals last written, or None if there are none (new file) or
        they are unreadable. The identity is 0 when unknown (a version-1 ledger)."""
        raw = os.pread(self._fd, max(f.size for f in _FORMATS.values()) + _CRC.size, 0)
        if not raw:
            return None
        magic, version = _HEAD.unpack(raw[: _HEAD.size]) if len(raw) >= _HEAD.size else (b"", 0)
        form = _FORMATS.get(version) if magic == _MAGIC else None
        if form is None:
            log.warning("%s is not an edgepack ledger (magic %r, version %d); it is rewritten", self.path, magic, version)
            return None
        # A version-1 ledger is 60 bytes; one rewritten by an older edgepack over a
        # version-2 file keeps the longer file's tail, which is not part of it.
        raw = raw[: form.size + _CRC.size]
        if len(raw) != form.size + _CRC.size or zlib.crc32(raw[: form.size]) != _CRC.unpack(raw[form.size :])[0]:
            log.warning("%s is damaged (%d bytes, bad checksum); it is rewritten, a lost WAL cannot be detected this time", self.path, len(raw))
            return None
        _, _, *values = form.unpack(raw[: form.size])
        identity = values.pop(0) if version >= 2 else 0
        return identity, dict(zip(LEDGER_COUNTERS, values))

    def write(self, values: dict[str, int], *, sync: bool, force: bool = False) -> None:
        """Store the totals; never raises (the commit it follows is already durable).

        ``sync``: make them durable too, unless that was done less than ``SYNC_INTERVAL``
        ago (``force``: whenever)."""
        body = _FORMAT.pack(_MAGIC, _VERSION, self.identity, *(int(values.get(name, 0)) for name in LEDGER_COUNTERS))
        try:
            os.pwrite(self._fd, body + _CRC.pack(zlib.crc32(body)), 0)
            now = time.monotonic()
            if force or (sync and now - self._synced_at >= SYNC_INTERVAL):
                os.fdatasync(self._fd)
                self._synced_at = now
                self._unsynced = False
            else:
                self._unsynced = self._unsynced or sync
        except OSError as exc:
            # Failing here must not fail the commit (the records are stored): it only
            # weakens the lost-WAL check until the next write succeeds.
            log.warning("could not update %s (%s); a lost WAL may go unnoticed until it is written again", self.path, exc)

    def close(self) -> None:
        """Make the last totals durable (if they were meant to be) and close the file."""
        try:
            if self._unsynced:
                os.fdatasync(self._fd)
        except OSError:
            pass
        finally:
            os.close(self._fd)
