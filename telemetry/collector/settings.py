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

    retry_after_seconds: int = 5
    """``Retry-After`` sent with a 503 when the store cannot take a batch right now."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "db_path", Path(self.db_path))
        object.__setattr__(self, "tokens_path", Path(self.tokens_path))
        for name in ("max_body_bytes", "max_decompressed_bytes", "max_records", "retry_after_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CollectorSettings.{name} must be a positive integer, got {value!r}")
