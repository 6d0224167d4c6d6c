"""Options of a collector instance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class CollectorSettings:
    """Where the collector keeps its data and how much it accepts per request."""

    db_path: Path
    """SQLite file that stores records and device counters (created if missing)."""

    tokens_path: Path
    """Tokens file written by ``edgepack token add``; holds only sha256 digests of tokens."""

    max_body_bytes: int = 8 * MIB
    """Largest request body accepted as sent (compressed size for gzip bodies)."""

    max_decompressed_bytes: int = 32 * MIB
    """Largest body accepted once gzip is undone; bounds the memory one request can take."""

    max_records: int = 5000
    """Most records accepted in one batch."""

    max_pending_batches: int = 16
    """Most batches in progress at once (being read, checked or stored); more get a 503.
    Together with ``max_decompressed_bytes`` this bounds the collector's memory."""

    lock_timeout_seconds: float = 5.0
    """How long a write waits for a lock held by another process on the SQLite file
    (a backup, an analyst's session) before the batch is answered 503."""

    retry_after_seconds: int = 5
    """``Retry-After`` sent with a 503 when the collector cannot take a batch right now."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "db_path", Path(self.db_path))
        object.__setattr__(self, "tokens_path", Path(self.tokens_path))
        if isinstance(self.lock_timeout_seconds, bool) or not isinstance(self.lock_timeout_seconds, (int, float)) or self.lock_timeout_seconds < 0:
            raise ValueError(f"CollectorSettings.lock_timeout_seconds must be a number >= 0, got {self.lock_timeout_seconds!r}")
        for name in ("max_body_bytes", "max_decompressed_bytes", "max_records", "max_pending_batches", "retry_after_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CollectorSettings.{name} must be a positive integer, got {value!r}")
