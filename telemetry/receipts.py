"""What the sync service does with a batch once the collector has answered for good:
delete it locally and count it (2xx), or move it to the dead-letter table (400/413/422),
and report either way (``BatchReport``, log line, ``on_batch``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import crashpoint
from .batch import Item
from .buffer import Buffer
from .outcomes import BatchReport, _Tally
from .request import Answer

log = logging.getLogger("telemetry.sync")


class Receipts:
    """Acknowledgements and dead letters of one service's batches."""

    def __init__(self, buffer: Buffer, on_batch: Callable[[BatchReport], None] | None) -> None:
        self.buffer = buffer
        self._on_batch = on_batch

    def acknowledge(
        self, batch_id: str, items: list[Item], answer: Answer, tally: _Tally, started: float, *, keep_hold: bool = False
    ) -> None:
        crashpoint.reach("after_response")
        self.buffer.acknowledge([item.rowid for item in items], keep_hold=keep_hold)
        body = answer.body if isinstance(answer.body, dict) else {}
        accepted, duplicates = body.get("accepted"), body.get("duplicates")
        if not isinstance(accepted, int) or not isinstance(duplicates, int):
            log.warning("batch %s: collector answered %s without accepted/duplicates counts", batch_id[:12], answer.status)
            accepted, duplicates = len(items), 0
        tally.batches += 1
        tally.sent += len(items)
        tally.accepted += accepted
        tally.duplicates += duplicates
        report = BatchReport(
            batch_id=batch_id, records=len(items), status=answer.status or 0, accepted=accepted,
            duplicates=duplicates, seconds=time.monotonic() - started,
        )
        log.info(
            "batch %s: %d records sent, %d accepted, %d duplicates (%.2f s)",
            batch_id[:12], report.records, accepted, duplicates, report.seconds,
        )
        if self._on_batch is not None:
            self._on_batch(report)

    def dead_letter(self, batch_id: str, items: list[Item], status: int, problem: str, tally: _Tally, started: float) -> None:
        moved = self.buffer.dead_letter([item.rowid for item in items], batch_id=batch_id, status=status, reason=problem)
        tally.dead_lettered += moved
        log.error("batch %s: collector refused it (%d: %s); %d records moved to the dead-letter table", batch_id[:12], status, problem, moved)
        if self._on_batch is not None:
            self._on_batch(BatchReport(batch_id=batch_id, records=len(items), status=status, dead_lettered=moved,
                                       seconds=time.monotonic() - started))
