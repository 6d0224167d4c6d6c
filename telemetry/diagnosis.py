"""What a failed SQLite or file operation on the buffer means, as one ``telemetry.errors`` error.

SQLite reports many different situations as ``DatabaseError``: a file that is not a
database, a damaged page, a full disk, an I/O error. Each asks for a different action
(point ``--db`` elsewhere; nothing, the buffer salvages itself; free space; check the
storage), and a wrong diagnosis can cost data: calling a healthy file on a full disk
"not a usable database" invites deleting it. So every translation happens here, from
the extended result code SQLite gives and, when SQLite only says "I/O error", from the
free space the file system reports.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from .errors import BufferDamagedError, DiskFullError, StorageError

SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
SQLITE_IOERR = 10
SQLITE_CANTOPEN = 14

LOW_SPACE = 256 * 1024
"""Free bytes below which an I/O error is diagnosed as a full disk."""


def damaged(exc: BaseException) -> bool:
    """True if SQLite says the file's content is damaged ("malformed", "not a database")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc)


def disk_full(exc: BaseException, path: Path) -> bool:
    """True if ``exc`` comes from a full disk (SQLITE_FULL, ENOSPC, or an I/O error with no space left)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == SQLITE_FULL:
        return True
    if (code is not None and code & 0xFF in (SQLITE_IOERR, SQLITE_CANTOPEN)) or isinstance(exc, OSError):
        return free_bytes(path) < LOW_SPACE
    return False


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    try:
        stat = os.statvfs(path.parent if not path.is_dir() else path)
    except OSError:
        return 1 << 62  # unknown: do not claim the disk is full
    return stat.f_bavail * stat.f_frsize


def storage_error(exc: BaseException, path: Path, doing: str) -> StorageError:
    """The error to raise for ``exc`` (raised while ``doing``, e.g. "writing"), chained by the caller."""
    if damaged(exc):
        return BufferDamagedError(f"{doing} telemetry buffer {path} failed: the file is damaged ({exc})")
    if disk_full(exc, path):
        return DiskFullError(
            f"{doing} telemetry buffer {path} failed: the disk is full ({exc}; {free_bytes(path)} bytes free). "
            "The buffer file itself is intact: do not delete it. Free space on that file system, "
            + ("then open the buffer again" if doing == "opening" else "and the records accepted meanwhile, still queued, are written")
        )
    return StorageError(f"{doing} telemetry buffer {path} failed: {exc}")
