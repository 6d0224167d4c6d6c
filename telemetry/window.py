"""The batches of one ``sync_once`` round in flight: read ahead, sent, answered oldest first.

Up to ``SyncOptions.in_flight`` batches travel at once, each on a connection of its own,
and one more is read, encoded and compressed ahead of them; so the collector reads and
parses one batch while it stores another, and the device reads and deletes meanwhile.

Exactly once holds because nothing here decides what is deleted but an answer, and
answers are settled in the order the batches were read:

* the oldest batch's 2xx deletes its records, right after the batch read ahead is sent
  (the collector keeps ``in_flight`` batches while the device deletes);
* any other answer of the oldest batch is settled on its own (``telemetry.delivery``:
  retries, splits, dead letters, stepping down), while the later ones keep travelling;
  their answers are settled after it, in order. The batch read ahead is read again (its
  counters may be stale now);
* when a stop is requested, the batches still in flight are waited for (each within its
  deadline) and those the collector acknowledged are deleted, oldest first;
* when sending stops on a refusal or an outage (token refused, collector unavailable,
  an answer that means the endpoint is wrong), nothing after the failed batch is
  deleted, whatever its answer: it is all sent again next round (the collector counts
  what it already had as duplicates), and "no records were deleted" stays true.

A crash at any point leaves at most ``in_flight + 1`` batches stored at home and not yet
deleted here: they are sent again and the collector counts them as duplicates. The hold
against ``drop_oldest`` covers every batch in flight and the one read ahead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .batch import Batch, batch_id_of
from .delivery import Delivery
from .errors import TelemetryError
from .outcomes import _Tally
from .request import Pending
from .wire import Body

if TYPE_CHECKING:
    from .sync import SyncService

log = logging.getLogger("telemetry.sync")


@dataclass
class Prepared:
    """A batch read and encoded ahead, held against ``drop_oldest``, not yet sent."""

    upto: int  # the highest row id read for it (its items and any dead-lettered as unreadable)
    batch_id: str
    batch: Batch
    body: Body


@dataclass
class Flight:
    """A batch sent and not yet settled."""

    upto: int
    batch_id: str
    batch: Batch
    sent: Body
    pending: Pending
    started: float


class Window:
    """One round's batches: at most ``in_flight`` sent and unsettled, one read ahead."""

    def __init__(self, service: SyncService, tally: _Tally, stop_event: threading.Event) -> None:
        self.service = service
        self.tally = tally
        self.stop_event = stop_event
        self.size = service.options.in_flight
        self.flights: deque[Flight] = deque()
        self.ready: Prepared | None = None

    def run(self) -> None:
        """Send and settle batches until the buffer is drained or something stops it."""
        tally = self.tally
        while tally.stop is None:
            if self.stop_event.is_set():
                tally.stop = "stop_requested"
                break
            self._fill()
            if not self.flights:
                tally.stop = "drained"
                break
            flight = self.flights.popleft()
            answer = flight.pending.answer()
            ok = answer.ok
            if ok:
                # Keep the collector busy with the batch read ahead while this one is deleted.
                self._send_ready()
            else:
                # Settled on its own; what was read ahead is read again afterwards (with the
                # counters as they are then: a dead letter must travel home with the next batches).
                self.ready = None
            Delivery(self.service, flight.batch.items, tally, self.stop_event, batch=flight.batch,
                     first=(flight.sent, answer, flight.started, flight.pending.sent_at),
                     keep_hold=bool(self.flights or self.ready), batch_id=flight.batch_id).run()
            if ok:
                self._read_ahead()

    def close(self, *, settle: bool) -> None:
        """Settle what is still in flight (``settle``: wait for the answers and delete the
        acknowledged batches, oldest first; only after a requested stop), then release the hold."""
        settle = settle and self.tally.stop == "stop_requested"
        try:
            while settle and self.flights:
                flight = self.flights.popleft()
                answer = flight.pending.answer()
                if answer.ok:
                    self.service._receipts.acknowledge(flight.batch_id, flight.batch.items, answer, self.tally,
                                                       flight.started, keep_hold=bool(self.flights))
                else:
                    log.info("batch %s: %s after sending stopped; its records are kept and sent again",
                             flight.batch_id[:12], answer.status if answer.status is not None else answer.problem)
        finally:
            self.flights.clear()
            self.ready = None
            self.service._release_hold()

    # -- sending -------------------------------------------------------------------------

    def _fill(self) -> None:
        """Send until ``in_flight`` batches travel (or nothing is left), then read one ahead."""
        while len(self.flights) < self.size:
            if self.ready is None:
                self.ready = self._prepare(ahead=False)
                if self.ready is None:
                    return
            self._send_ready()
        self._read_ahead()

    def _read_ahead(self) -> None:
        if self.ready is None and self.tally.stop is None:
            self.ready = self._prepare(ahead=True)

    def _send_ready(self) -> None:
        ready, self.ready = self.ready, None
        if ready is None:
            return
        service = self.service
        if not service._fits(ready.body):
            # Read again for what the service sends now (a collector stepped it down, or the
            # counters changed form): the checks a record needs depend on the format.
            ready = self._prepare(ahead=False)
            if ready is None:
                return
        pending = service._send(ready.body)
        self.flights.append(Flight(ready.upto, ready.batch_id, ready.batch, ready.body, pending, time.monotonic()))

    def _after(self) -> int:
        if self.ready is not None:
            return self.ready.upto
        return self.flights[-1].upto if self.flights else 0

    def _prepare(self, *, ahead: bool) -> Prepared | None:
        """The next batch after those in flight, encoded and held; None when none is left.

        Records that cannot be decoded are dead-lettered here, once no batch is in flight
        (None until then), and reading goes on past them. ``ahead``: a failure to read is
        logged, not raised (it is read again when its turn comes)."""
        service = self.service
        after = self._after()
        try:
            while True:
                records = service.buffer.oldest(service.options.batch_size, after=after, packed=True)
                if not records:
                    return None
                batch, unreadable = service._encode(records)
                if unreadable and self.flights:
                    # They leave their chunks only after the records before them: dead-letter
                    # them once the batches in flight are settled.
                    return None
                if unreadable:
                    service._unreadable(unreadable, self.tally)
                if not batch.items:
                    after = records[-1].rowid  # all unreadable, and dead-lettered: read on
                    continue
                # A batch cut at max_batch_bytes ends before the last record read.
                upto = batch.items[-1].rowid
                # Hold it too: drop_oldest would otherwise pick exactly these rows, the oldest
                # ones not in flight.
                service._hold(upto)
                batch_id = batch_id_of(batch.items)
                body = service._body(batch_id, batch.items, batch)
                return Prepared(upto=upto, batch_id=batch_id, batch=batch, body=body)
        except TelemetryError as exc:
            if not ahead:
                raise
            log.debug("reading the next batch ahead failed (%s); it is read again when its turn comes", exc)
            return None
