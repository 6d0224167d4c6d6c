"""The options of the buffer and of the sync service (frozen keyword-only dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import OptionsError

SYNCHRONOUS = {"power": "FULL", "process": "NORMAL"}
"""SQLite ``synchronous`` level for each ``BufferOptions.durability``."""

COLLECTOR_MAX_RECORDS = 5000
"""The collector refuses batches with more records than this (the HTTP contract)."""

MAX_IN_FLIGHT = 4
"""Most batches a sync service keeps in flight (the collector's default
``max_pending_per_device``: one more is answered 429)."""


@dataclass(frozen=True, kw_only=True)
class BufferOptions:
    """How a ``Buffer`` stores records."""

    durability: Literal["power", "process"] = "power"
    """``"power"``: committed records survive power loss (``synchronous=FULL``).
    ``"process"``: they survive process crashes only (``synchronous=NORMAL``), for less I/O."""
    max_bytes: int | None = 256 * 1024 * 1024
    """Upper bound on stored record bytes (payload plus a fixed per-row overhead);
    ``None`` for no bound. Dead letters are kept up to a quarter of it on top (oldest
    discarded first, still counted). The file can exceed it by SQLite page slack and the WAL."""
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    """What to give up when ``max_bytes`` is reached; dropped records are counted.
    ``"drop_newest"`` refuses new records from the first that does not fit until a
    delivery makes room, so the buffer always holds the oldest records without holes."""
    sample_rate: float = 1.0
    """Fraction of records kept, decided by the record's UUID (so deterministic per
    record); the others are counted as ``sampled_out``."""
    group_size: int = 1000
    """Most records in one chunk (one row of the file). A commit stores every chunk
    queued when it starts (at most 4 MiB of records and a quarter of ``max_bytes``)."""
    group_delay: float = 0.05
    """Longest a recorded record waits in memory before its group is committed, in seconds.
    A commit starts this long after the first record queued since the last one, or as
    soon as a whole commit's worth (see ``group_size``) or half of ``max_queued`` is
    queued, or on ``flush()``."""
    max_queued: int = 250_000
    """Records held in memory waiting for the writer (a packed 31-feature record takes
    under 1 KB there); beyond it new records are dropped and counted, so a stalled disk
    cannot exhaust memory. Lower it on small devices."""
    busy_timeout: float = 30.0
    """Seconds to wait for a lock held by another process (e.g. ``edgepack sync``)."""
    retry_delay: float = 1.0
    """Seconds between attempts when the disk refuses a write (records stay queued)."""
    create: bool = True
    """Create the file if it does not exist; ``False`` makes a missing file an error."""

    def __post_init__(self) -> None:
        if self.durability not in SYNCHRONOUS:
            raise OptionsError(f"durability={self.durability!r}: expected 'power' or 'process'")
        if self.when_full not in ("drop_oldest", "drop_newest"):
            raise OptionsError(f"when_full={self.when_full!r}: expected 'drop_oldest' or 'drop_newest'")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise OptionsError(f"max_bytes={self.max_bytes!r}: expected a positive number of bytes or None")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise OptionsError(f"sample_rate={self.sample_rate!r}: expected a fraction between 0 and 1")
        if self.group_size < 1 or self.max_queued < 1:
            raise OptionsError("group_size and max_queued must be at least 1")
        if self.group_delay < 0 or self.busy_timeout < 0 or self.retry_delay <= 0:
            raise OptionsError("group_delay and busy_timeout must be >= 0 and retry_delay > 0 seconds")


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """How the sync service batches, sends and retries."""

    batch_size: int = 2000
    """Most records per batch (the collector accepts at most 5000). 2000 measured ~20%
    faster end to end than 1000 on loopback (the collector's commit and fsync, and the
    device's reads, holds and deletes, are paid per batch); ``in_flight + 1`` batches of
    decoded records are held in memory at once (a few MB for 31-feature records): lower
    it on small devices."""
    in_flight: int = 2
    """Batches sent before the oldest of them is answered (each on a connection of its
    own), so the collector reads and parses one while it stores another. Answers are
    settled oldest first; a crash can leave up to ``in_flight + 1`` batches stored at
    home but not yet deleted here, which are sent again and count as duplicates. 1 sends
    one batch at a time (the next is still read and encoded while it travels). The
    collector takes at most 4 uploads at once per device by default."""
    max_batch_bytes: int = 4 * 1024 * 1024
    """Most bytes of records (JSON or MessagePack, as ``wire`` says) per batch before compression (the collector takes 8 MiB as
    sent and 32 MiB decompressed); a single larger record is still sent alone."""
    wire: Literal["packed", "json"] = "packed"
    """Body format. ``"packed"``: the MessagePack batch (``telemetry.wire``), the buffer's
    own encoding of the records, grouped by context, with no JSON made on the device.
    ``"json"``: the JSON batch every collector takes. A collector that does not know the
    packed format (415) is sent JSON from then on."""
    zstd: bool = True
    """Compress with ``Content-Encoding: zstd`` when the ``zstandard`` package is installed
    (``pip install 'edgepack[zstd]'``); otherwise, or for a collector that refuses it
    (415), gzip (if ``gzip``). zstd level 1 compresses a packed 31-feature record ~10x
    faster than gzip level 1, to the same size."""
    zstd_level: int = 1
    """zstd level (1 to 19) for ``zstd``."""
    gzip: bool = True
    """Send bodies with ``Content-Encoding: gzip`` (when zstd is off or unavailable)."""
    gzip_level: int = 1
    """zlib level for ``gzip``. Level 1 packs 31-feature records to ~36% of their JSON at
    ~13 µs of CPU each; level 6 reaches ~31% at ~4x the CPU. Raise it on slow links."""
    request_deadline: float = 30.0
    """Overall seconds one request may take, connect to last byte."""
    backoff_base: float = 1.0
    """Seconds of the first backoff window; it doubles with each consecutive failure."""
    backoff_cap: float = 300.0
    """Longest wait between attempts, in seconds (also bounds ``Retry-After``)."""
    max_attempts: int = 5
    """Consecutive transient failures after which ``sync_once`` gives up with
    ``stopped="unavailable"`` (``run`` waits and keeps trying)."""
    interval: float = 30.0
    """Seconds ``run`` waits between rounds once the buffer is drained."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= COLLECTOR_MAX_RECORDS:
            raise OptionsError(f"batch_size={self.batch_size!r}: expected 1 to {COLLECTOR_MAX_RECORDS} records")
        if not 1 <= self.in_flight <= MAX_IN_FLIGHT:
            raise OptionsError(f"in_flight={self.in_flight!r}: expected 1 to {MAX_IN_FLIGHT} batches")
        if self.max_batch_bytes < 1024:
            raise OptionsError(f"max_batch_bytes={self.max_batch_bytes!r}: expected at least 1024 bytes")
        if self.request_deadline <= 0 or self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise OptionsError("request_deadline and backoff_base must be > 0 seconds and backoff_cap >= backoff_base")
        if self.wire not in ("packed", "json"):
            raise OptionsError(f"wire={self.wire!r}: expected 'packed' (MessagePack) or 'json'")
        if not 1 <= self.zstd_level <= 19:
            raise OptionsError(f"zstd_level={self.zstd_level!r}: expected 1 (fastest) to 19 (smallest)")
        if not 0 <= self.gzip_level <= 9:
            raise OptionsError(f"gzip_level={self.gzip_level!r}: expected 0 (store) to 9 (smallest)")
        if self.max_attempts < 1 or self.interval < 0:
            raise OptionsError("max_attempts must be at least 1 and interval >= 0 seconds")
