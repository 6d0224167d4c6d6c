"""One batch of the sync service sent until the collector's answer settles it.

``telemetry.window`` keeps a round's batches in flight and hands each answer here, oldest
first; a batch is then acknowledged, or sent again as many times as its answers say (split
in halves on a 413, around its damaged records on a 400/422, stepped down on a 415, after
the backoff on a transient failure), dead-lettered, or it stops the round. What each
answer does is the table of ``telemetry.sync``; the state that outlives a batch (wire
format, backoff, the hold, whether ``lost`` is folded) stays on the service.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .batch import Batch, Item, batch_id_of, damaged
from .outcomes import _Tally
from .request import Answer
from .wire import Body

if TYPE_CHECKING:
    from .sync import SyncService

log = logging.getLogger("telemetry.sync")


class Delivery:
    """One batch, sent until it is settled; ``run`` sets ``tally.stop`` when sending must stop.

    ``batch`` holds the items already encoded; ``first`` is the body already sent, its
    answer, when the batch was first sent and when this body was (``telemetry.window``
    sends batches ahead and settles their answers here). ``keep_hold``: batches after
    this one are in flight, keep the hold over them when this one is deleted.
    ``batch_id``: the items' (``batch_id_of``), if known already.
    """

    def __init__(
        self,
        service: SyncService,
        items: list[Item],
        tally: _Tally,
        stop_event: threading.Event,
        *,
        batch: Batch | None = None,
        first: tuple[Body, Answer, float, float] | None = None,
        keep_hold: bool = False,
        batch_id: str | None = None,
    ) -> None:
        self.service = service
        self.items = items
        self.tally = tally
        self.stop_event = stop_event
        self.batch = batch
        self.keep_hold = keep_hold
        self.batch_id = batch_id or batch_id_of(items)
        self.sent: Body | None
        self._answer: Answer | None
        self.started: float
        self.sent_at: float
        if first is not None:
            self.sent, self._answer, self.started, self.sent_at = first
        else:
            self.sent, self._answer, self.started, self.sent_at = None, None, time.monotonic(), 0.0
        self.checked = False  # whether the items' packed bytes were decoded (damaged)

    def run(self) -> None:
        """Send the batch until it is settled."""
        answer, self._answer = self._answer, None
        while True:
            if answer is None:
                answer = self._send()
                if answer is None:
                    return
            if not self._settle(answer):
                return
            answer = None

    # -- sending --------------------------------------------------------------------------

    def _send(self) -> Answer | None:
        """Send the batch as the service sends now and wait for the answer; None when none
        of its records is left to send."""
        service = self.service
        if not self.checked and not service._wire.packed:
            self.checked = True
            kept = self._decodable()
            if len(kept) < len(self.items):
                if not kept:
                    return None
                self.items, self.batch, self.batch_id = kept, None, batch_id_of(kept)
        service._hold(max(item.rowid for item in self.items))
        self.sent = service._body(self.batch_id, self.items, self.batch)
        pending = service._send(self.sent)
        self.sent_at = pending.sent_at
        return pending.answer()

    def _decodable(self) -> list[Item]:
        """The items without the packed records whose bytes do not decode as a record of
        their input names, which are dead-lettered now (for a batch about to be sent as
        JSON, which needs every record decoded)."""
        items = self.items
        bad = damaged(items)
        if not bad:
            return items
        log.error("%d stored record(s) of a batch do not decode (damaged or hostile bytes); moving them to the dead-letter table",
                  len(bad))
        self.service._unreadable([items[i].rowid for i in bad], self.tally)
        gone = set(bad)
        return [item for i, item in enumerate(items) if i not in gone]

    # -- answers --------------------------------------------------------------------------

    def _settle(self, answer: Answer) -> bool:
        """Do what ``answer`` says; True: send the batch again (as the service sends now)."""
        service, tally = self.service, self.tally
        sent = self.sent
        assert sent is not None
        status = answer.status
        if answer.ok:
            self._acknowledge(answer)
            return False
        if status == 413:
            self._too_large(answer)
            return False
        if status in (400, 422):
            return self._refused(answer, status, sent)
        if status in (401, 403):
            tally.stop = "unauthorized"
            tally.error = (
                f"the collector at {service.endpoint} refused this device's token ({status}: {answer.problem}); "
                "check the --token-file content against the token `edgepack token add` issued for this device. "
                "No records were deleted."
            )
            log.error("%s", tally.error)
            return False
        if status == 415 and not service._fits(sent):
            return True  # sent before the service stepped down for another batch: resend as it sends now
        if status == 415 and service._wire.step_down(answer.problem):
            return True
        if answer.transient:
            return self._retry(answer)
        tally.stop = "rejected"
        tally.error = (
            f"the collector answered {status} to POST {service.url} ({answer.problem}); "
            "expected 200: check --endpoint (the collector's base URL, e.g. http://host:8787). No records were deleted."
        )
        log.error("%s", tally.error)
        return False

    def _acknowledge(self, answer: Answer) -> None:
        service = self.service
        if service._backoff.failures:
            service._recovered_at = time.monotonic()
        service._backoff.failures = 0
        service._receipts.acknowledge(self.batch_id, self.items, answer, self.tally, self.started, keep_hold=self.keep_hold)
        if not self.keep_hold:
            service._held = 0

    def _too_large(self, answer: Answer) -> None:
        """A 413: the batch is sent again in halves; a single record is dead-lettered."""
        items = self.items
        if len(items) > 1:
            log.info("batch %s: collector says too large (413); splitting %d records", self.batch_id[:12], len(items))
            half = len(items) // 2
            for last, part in ((False, items[:half]), (True, items[half:])):
                Delivery(self.service, part, self.tally, self.stop_event, keep_hold=self.keep_hold or not last).run()
                if self.tally.stop is not None:
                    return
            return
        self._dead_letter(413, f"a single record is over the collector's size limit: {answer.problem}")

    def _refused(self, answer: Answer, status: int, sent: Body) -> bool:
        """A 400/422: dead-letter the batch, unless it is only the ``lost`` counter that the
        collector refused (True: send again) or the batch holds damaged records."""
        service = self.service
        if sent.carries_lost and answer.problem.startswith("counters"):
            if not service._fold_lost:
                log.warning(
                    "the collector does not take the 'lost' counter (%s: %s); sending lost records inside 'dropped' from now on",
                    status, answer.problem,
                )
            service._fold_lost = True
            return True
        if not self.checked:
            # Packed records were read with their framing checked only (telemetry.chunks.split):
            # before the refusal takes the whole batch, take out records whose stored bytes
            # are damaged, so that they do not take the rest with them.
            self.checked = True
            bad = damaged(self.items)
            if bad:
                self._around(bad)
                return False
        self._dead_letter(status, answer.problem)
        return False

    def _around(self, bad: list[int]) -> None:
        """Deliver the runs of the items between the damaged ones (indexes ``bad``) and
        dead-letter each damaged record in its turn, oldest first: a record leaves its chunk
        only after those before it (``telemetry.store``)."""
        items, tally = self.items, self.tally
        log.error("%d stored record(s) of a refused batch do not decode (damaged or hostile bytes); sending the others "
                  "and moving those to the dead-letter table", len(bad))
        start = 0
        for index in [*bad, len(items)]:
            if index > start:
                Delivery(self.service, items[start:index], tally, self.stop_event,
                         keep_hold=self.keep_hold or index < len(items)).run()
                if tally.stop is not None:
                    return
            if index < len(items):
                self.service._unreadable([items[index].rowid], tally)
            start = index + 1

    def _retry(self, answer: Answer) -> bool:
        """No answer, or a transient failure: True to send again after the backoff; False
        when sending stops (``max_attempts`` reached, or a stop requested meanwhile)."""
        service, tally = self.service, self.tally
        backoff = service._backoff
        tally.retries += 1
        if self.sent_at < service._recovered_at:
            # Sent before the collector came back from the failure an earlier batch was
            # retried through: the same outage, already waited for.
            return True
        tally.attempts += 1
        backoff.failures += 1
        what = answer.problem if answer.status is None else f"{answer.status}: {answer.problem}"
        if tally.attempts >= service.options.max_attempts:
            tally.stop = "unavailable"
            tally.error = f"the collector at {service.endpoint} is unavailable ({what}) after {tally.attempts} attempts; records are kept for the next round"
            log.warning("%s", tally.error)
            return False
        delay = backoff.delay(answer.retry_after)
        log.warning("batch %s: %s; retrying in %.1f s", self.batch_id[:12], what, delay)
        if backoff.wait(delay, self.stop_event):
            tally.stop = "stop_requested"
            return False
        return True

    def _dead_letter(self, status: int, problem: str) -> None:
        self.service._receipts.dead_letter(self.batch_id, self.items, status, problem, self.tally, self.started)
        self.service._rehold()
