"""What the buffer and the sync service report: counts, batch reports, sync results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StopReason = Literal["drained", "stop_requested", "unavailable", "unauthorized", "rejected"]


@dataclass(frozen=True, kw_only=True)
class BufferStats:
    """Persistent counts of a buffer (totals since the file was created)."""

    recorded: int
    """Records accepted by ``record()`` and committed (including sampled-out and dropped)."""
    pending: int
    """Records stored and waiting to be sent."""
    delivered: int
    """Records the collector acknowledged (then deleted here)."""
    dropped: int
    """Records given up because the buffer was full (disk bound or memory queue)."""
    sampled_out: int
    """Records skipped by ``sample_rate``."""
    dead_lettered: int
    """Records the collector refused as malformed, moved to the ``dead_letters`` table."""
    lost: int
    """Records accepted and committed that can never be sent: on damaged pages of the file
    (which was moved aside and salvaged) or in commits that went missing with the WAL.
    Logged as errors when found, and sent home with every batch."""
    stored_bytes: int
    """Bytes counted against ``max_bytes``."""


@dataclass(frozen=True, kw_only=True)
class BatchReport:
    """What happened to one batch (passed to ``on_batch`` and logged)."""

    batch_id: str
    """SHA-256 of the batch's sorted record ids."""
    records: int
    """Records in the batch."""
    status: int
    """HTTP status of the final answer (0 when the record could not even be read)."""
    accepted: int = 0
    """Records newly stored by the collector."""
    duplicates: int = 0
    """Records the collector already had (a resend)."""
    dead_lettered: int = 0
    """Records moved to the dead-letter table."""
    seconds: float = 0.0
    """Time from the first attempt to the final answer."""


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """The outcome of one ``sync_once`` (or of ``run`` when it returns)."""

    stopped: StopReason
    """Why sending stopped: ``drained`` (nothing left), ``stop_requested``, ``unavailable``
    (collector unreachable after ``max_attempts``), ``unauthorized`` (401/403: token),
    ``rejected`` (an answer that means the endpoint is wrong)."""
    batches: int = 0
    """Batches acknowledged by the collector."""
    sent: int = 0
    """Records acknowledged by the collector (accepted + duplicates) and deleted here."""
    accepted: int = 0
    """Records newly stored by the collector."""
    duplicates: int = 0
    """Records the collector already had."""
    dead_lettered: int = 0
    """Records moved to the dead-letter table."""
    retries: int = 0
    """Requests that failed transiently and were retried (or given up on)."""
    error: str | None = None
    """What went wrong and what to do, when ``stopped`` is not ``drained``/``stop_requested``."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong with the configuration or the collector."""
        return self.stopped in ("drained", "stop_requested")


@dataclass
class _Tally:
    batches: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    attempts: int = 0
    stop: StopReason | None = None
    error: str | None = None

    def result(self, stopped: StopReason) -> SyncResult:
        return SyncResult(
            stopped=stopped, batches=self.batches, sent=self.sent, accepted=self.accepted,
            duplicates=self.duplicates, dead_lettered=self.dead_lettered, retries=self.retries, error=self.error,
        )


def _add(total: SyncResult, result: SyncResult) -> SyncResult:
    """Totals of ``run``'s rounds so far, ending the way ``result`` ended."""
    return SyncResult(
        stopped=result.stopped, batches=total.batches + result.batches, sent=total.sent + result.sent,
        accepted=total.accepted + result.accepted, duplicates=total.duplicates + result.duplicates,
        dead_lettered=total.dead_lettered + result.dead_lettered, retries=total.retries + result.retries,
        error=result.error,
    )
