"""The one exception tree of the telemetry side.

``TelemetryError`` is the root. Telemetry stays importable without ``runtime`` (it is a
separate device component with its own protocol), so the root does not subclass
``runtime.EdgeError``; callers who want both catch ``(EdgeError, TelemetryError)``.
SQLite errors are translated into this tree in ``telemetry.store`` only.
"""

from __future__ import annotations


class TelemetryError(Exception):
    """Root of every error the telemetry package raises on purpose."""


class RecordError(TelemetryError, TypeError):
    """``Buffer.record`` was called with arguments that do not match its contract.

    Also a ``TypeError`` because that is what a caller passing the wrong types expects.
    """


class BufferClosedError(TelemetryError):
    """The buffer was used after ``close()``."""


class BufferFormatError(TelemetryError):
    """The database file is not an edgepack buffer, or was written by a newer schema."""


class StorageError(TelemetryError):
    """SQLite failed to read or write the buffer (disk full, I/O error, corruption).

    Records already accepted by ``record()`` stay queued in memory and are retried.
    """


class FlushTimeout(TelemetryError, TimeoutError):
    """``flush(timeout=...)`` returned before everything recorded earlier was durable."""


class SyncConfigError(TelemetryError):
    """The sync service is configured wrongly (endpoint URL, token, options)."""


class OptionsError(TelemetryError, ValueError):
    """An option has a value outside what it accepts (the message names both)."""


class DiskFullError(StorageError):
    """The file system holding the buffer has no space left. The file itself is intact:
    free space and the buffer goes on (records accepted meanwhile stay queued)."""


class BufferDamagedError(StorageError):
    """SQLite found damaged pages in the buffer file. The buffer moves the file aside
    (``<db>.corrupt-<time>``), salvages what it can read into a fresh file and counts the
    rest as ``lost``; this error reaches a caller only if that salvage failed too."""


class FeedbackError(TelemetryError, ValueError):
    """``Buffer.feedback`` got a record id, label or time it cannot queue, or a label that
    differs from the one already queued for the same record (the message names which)."""
