"""Device side: durable prediction buffer and the sync service that sends it home."""

from .buffer import Buffer, BufferOptions, BufferStats
from .errors import (
    BufferClosedError,
    BufferDamagedError,
    DiskFullError,
    FeedbackError,
    BufferFormatError,
    FlushTimeout,
    OptionsError,
    RecordError,
    StorageError,
    SyncConfigError,
    TelemetryError,
)
from .sync import BatchReport, SyncOptions, SyncResult, SyncService
from .feedback_sync import FeedbackResult

__all__ = [
    "Buffer",
    "BufferOptions",
    "BufferStats",
    "SyncService",
    "SyncOptions",
    "SyncResult",
    "BatchReport",
    "TelemetryError",
    "RecordError",
    "BufferClosedError",
    "BufferFormatError",
    "BufferDamagedError",
    "DiskFullError",
    "StorageError",
    "FlushTimeout",
    "OptionsError",
    "SyncConfigError",
    "FeedbackError",
    "FeedbackResult",
]
