"""Options of a collector instance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class CollectorSettings:
    """Where the collector keeps its data and how much it accepts per request."""

    db_path: Path | None = None
    """SQLite file that stores records and device counters (created if missing); give
    this or ``db_url``."""

    db_url: str | None = None
    """PostgreSQL connection URI (``postgresql://USER@HOST:PORT/DB``) instead of ``db_path``:
    several collectors may share one such database."""

    db_pool_size: int = 8
    """Connections to PostgreSQL one collector process holds for storing batches (batches
    are stored on that many threads at once); unused with SQLite, which has one writer."""

    tokens_path: Path
    """Tokens file written by ``edgepack token add``; holds only sha256 digests of tokens."""

    max_body_bytes: int = 8 * MIB
    """Largest request body accepted as sent (compressed size for gzip bodies)."""

    max_decompressed_bytes: int = 32 * MIB
    """Largest body accepted once gzip is undone; bounds the memory one request can take."""

    max_records: int = 5000
    """Most records accepted in one batch."""

    max_pending_batches: int = 16
    """Most batches in progress at once, over all devices (being read, checked or stored);
    more get a 503."""

    max_pending_per_device: int = 4
    """Most batches one device may have in progress at once; more get a 429. A device's
    sync sends one batch at a time, so this only ever stops a misbehaving token from
    holding the slots every other device needs."""

    max_inflight_bytes: int | None = None
    """Most bytes of request bodies (once gzip is undone) held in memory at once, over all
    devices; a body that would cross it is refused with a 503 as it arrives. This, not the
    number of batches, is what bounds the collector's memory: each byte held costs a few
    more while it is parsed and stored. Default: twice ``max_decompressed_bytes``."""

    max_inflight_bytes_per_device: int | None = None
    """Most bytes of request bodies one device may have in memory at once (429 beyond).
    Default: ``max_decompressed_bytes``, one full-size batch."""

    header_timeout_seconds: float = 10.0
    """A connection must deliver the headers of its request within this time of its first
    byte (or of connecting); otherwise it is closed without an answer."""

    body_timeout_seconds: float = 60.0
    """A request body must arrive completely within this time of its headers; otherwise
    it is answered 408 and the connection closed. An 8 MiB body at 200 kB/s takes 42 s."""

    max_header_connections: int = 256
    """Most connections that may be waiting for their request headers at once; a
    connection beyond it is closed at once, so slow clients cannot exhaust the process's
    file descriptors."""

    keep_alive_seconds: float = 5.0
    """How long an idle connection is kept open between requests."""

    lock_timeout_seconds: float = 5.0
    """How long a write waits for a lock held by another process on the SQLite file
    (another ``--workers`` process, a backup, an analyst's session) before the batch is
    answered 503."""

    retry_after_seconds: int = 5
    """``Retry-After`` sent with a 503 when the collector cannot take a batch right now."""

    releases_path: Path | None = None
    """The release repository (``edgepack release init``) whose TUF metadata and bundles the
    collector serves to devices. Default: ``releases/`` next to ``db_path``."""

    @property
    def database(self) -> str:
        """Where records go, as given: the SQLite path or the PostgreSQL URI."""
        return self.db_url if self.db_url is not None else str(self.db_path)

    def __post_init__(self) -> None:
        if (self.db_path is None) == (self.db_url is None):
            raise ValueError("CollectorSettings needs exactly one of db_path (SQLite) and db_url (PostgreSQL)")
        if self.db_path is not None:
            object.__setattr__(self, "db_path", Path(self.db_path))
        object.__setattr__(self, "tokens_path", Path(self.tokens_path))
        if isinstance(self.lock_timeout_seconds, bool) or not isinstance(self.lock_timeout_seconds, (int, float)) or self.lock_timeout_seconds < 0:
            raise ValueError(f"CollectorSettings.lock_timeout_seconds must be a number >= 0, got {self.lock_timeout_seconds!r}")
        for name in ("header_timeout_seconds", "body_timeout_seconds", "keep_alive_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"CollectorSettings.{name} must be a number > 0, got {value!r}")
        if self.max_inflight_bytes_per_device is None:
            object.__setattr__(self, "max_inflight_bytes_per_device", self.max_decompressed_bytes)
        if self.max_inflight_bytes is None:
            object.__setattr__(self, "max_inflight_bytes", 2 * max(self.max_decompressed_bytes, self.max_inflight_bytes_per_device))
        for name in (
            "max_body_bytes", "max_decompressed_bytes", "max_records", "max_pending_batches", "max_pending_per_device",
            "max_inflight_bytes", "max_inflight_bytes_per_device", "max_header_connections", "retry_after_seconds",
            "db_pool_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CollectorSettings.{name} must be a positive integer, got {value!r}")
        # A batch that may be as large as max_decompressed_bytes must fit in one device's
        # share and in the whole pool, or it would be refused (and retried) forever.
        if self.max_inflight_bytes_per_device < self.max_decompressed_bytes:  # type: ignore[operator]
            raise ValueError(
                f"CollectorSettings.max_inflight_bytes_per_device ({self.max_inflight_bytes_per_device}) must be at least "
                f"max_decompressed_bytes ({self.max_decompressed_bytes}), or a full-size batch could never be accepted"
            )
        if self.max_inflight_bytes < self.max_inflight_bytes_per_device:  # type: ignore[operator]
            raise ValueError(
                f"CollectorSettings.max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                f"max_inflight_bytes_per_device ({self.max_inflight_bytes_per_device})"
            )
