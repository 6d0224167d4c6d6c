"""The sync service: sends the buffer's oldest records home, exactly once, in batches.

Each round takes the oldest pending records (``batch_size``, cut at ``max_batch_bytes``
as encoded), sends them compressed in one ``POST /v1/batches`` with the device's bearer
token, and deletes them locally only after a 2xx, in one transaction. The body is the
MessagePack batch (the records as the buffer stores them, grouped by context; zstd when
``zstandard`` is installed, else gzip) or JSON: see ``telemetry.wire`` and
``telemetry.batch``. The ``batch_id`` is the
SHA-256 of the sorted record ids, so a resend after a crash carries the same id; the
collector stores each (device, record id) once, so a resend stores nothing twice.

The device and the collector work at the same time: while a batch travels, the next one
is read, encoded and compressed, and the batch before it is deleted locally. So
a crash can leave up to two batches stored at home but not yet deleted here; both are
sent again and count as duplicates. A batch being read ahead is held against
``drop_oldest`` like the one in flight.

What each answer does:

* 2xx: delete the batch's records.
* 413: split the batch in halves and send each; a single record that is still too large
  is dead-lettered (it can never be sent).
* 400 / 422: the collector will never accept this batch: move it to the dead-letter
  table, count it (the count travels with the next batches), go on with the rest.
  Except a refusal of the ``lost`` counter (a collector older than it answers 422 on
  ``counters``): then the batch is sent again with lost records inside ``dropped``.
* 401 / 403: stop, keep everything, report the token problem.
* 415: step down to what an older collector takes (zstd to gzip, the MessagePack batch to
  JSON, gzip to none: ``telemetry.wire``), resend, and keep it so.
* 408, 425, 429, 5xx, timeouts, connection errors: wait with full-jitter exponential
  backoff (``backoff_base`` doubling up to ``backoff_cap``), or the ``Retry-After`` the
  collector asked for if longer (also bounded by the cap), and resend.
* anything else (404, 3xx, a 415 with nothing left to step down to...): stop, keep everything, report that the endpoint looks wrong.

Every request has an overall deadline (``request_deadline``), see ``telemetry.request``;
backoff is ``telemetry.backoff``; acknowledgements and dead letters ``telemetry.receipts``.
Records whose stored payload cannot be decoded (damaged or hostile bytes) are
dead-lettered when the batch is read (``telemetry.batch``), and sending goes on.

A round that drained the records then sends the queued labels (``Buffer.feedback``) to
``POST /v1/feedback``: see ``telemetry.feedback_sync``; ``last_feedback`` says how it went.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import httpx

from .backoff import Backoff
from .batch import Batch, Item, batch_id_of, encode, json_records, packed_records
from .buffer import Buffer
from .errors import SyncConfigError, TelemetryError
from .feedback_sync import FeedbackResult, FeedbackUploader
from .options import SyncOptions
from .outcomes import BatchReport, SyncResult, _add, _Tally
from .receipts import Receipts
from .request import Answer, check_endpoint, post
from .rows import StoredRecord
from .wire import Body, Wire

log = logging.getLogger("telemetry.sync")

_TRANSIENT = frozenset({408, 425, 429})


@dataclass
class Prefetch:
    """The next batch, read and encoded while the current one is in flight."""

    records: int  # records read (items plus any dead-lettered as unreadable)
    batch: Batch
    body: Body | None = None


class SyncService:
    """Sends a buffer's records to a collector.

    ``client`` lets tests and applications supply their own ``httpx.Client`` (fault
    injection through ``httpx.MockTransport``, proxies, TLS settings); ``sleep``, ``rng``
    and ``clock`` (wall time, for ``Retry-After`` dates) make backoff testable without
    waiting (``sleep`` receives each delay; by default waits end early on a stop request).
    ``on_batch`` is called after every batch with a ``BatchReport``.
    """

    def __init__(
        self,
        buffer: Buffer,
        endpoint: str,
        *,
        token: str,
        client: httpx.Client | None = None,
        options: SyncOptions | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.options = options or SyncOptions()
        self.endpoint = check_endpoint(endpoint)
        self.url = self.endpoint + "/v1/batches"
        token = token.strip() if isinstance(token, str) else token
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise SyncConfigError("the device token must be a non-empty string without spaces (the content of --token-file)")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = client or httpx.Client()
        self._owns_client = client is None
        self._clock = clock
        self._wire = Wire(self.options)
        self._backoff = Backoff(self.options, sleep=sleep, rng=rng)
        self._receipts = Receipts(buffer, on_batch)
        # Collectors before the ``lost`` counter refuse unknown counter names (422 on
        # "counters"); for those, lost records are sent inside ``dropped`` instead.
        self._fold_lost = False
        self._next: Prefetch | None = None
        # Labels (Buffer.feedback) go home after the records, at the end of a drained round.
        self._feedback = FeedbackUploader(self)
        self.last_feedback: FeedbackResult | None = None
        """What the feedback step of the last round did (None until one ran)."""

    # -- public ---------------------------------------------------------------------------

    def sync_once(self, stop_event: threading.Event | None = None) -> SyncResult:
        """Send batches until the buffer is drained or something stops it."""
        tally = _Tally()
        stop_event = stop_event or threading.Event()
        self._next = None
        try:
            while tally.stop is None:
                if stop_event.is_set():
                    tally.stop = "stop_requested"
                    break
                ahead, self._next = self._next, None
                body = None
                if ahead is not None:
                    count, batch, body = ahead.records, ahead.batch, ahead.body
                else:
                    self._acknowledge_pending(keep_hold=False)  # before reading what is left
                    records = self.buffer.oldest(self.options.batch_size)
                    count, batch = len(records), self._encode(records, tally)
                if not count:
                    tally.stop = "drained"
                    break
                if batch.items:
                    try:
                        acknowledged = self._deliver(
                            batch.items, tally, stop_event, prefetch=True, body=body, batch=batch,
                            held=ahead is not None,
                        )
                    except BaseException:
                        self._release_hold()
                        raise
                    if not acknowledged:
                        self._next = None  # read again after a split, dead letter or failure
                    if tally.stop is not None:
                        self._release_hold()  # an acknowledged or dead-lettered batch released it already
            if tally.stop == "drained":
                self._acknowledge_pending(keep_hold=False)
                self.last_feedback = self._feedback.send(stop_event)
                if self.last_feedback.stopped in ("unavailable", "unauthorized"):
                    tally.stop, tally.error = self.last_feedback.stopped, self.last_feedback.error
        finally:
            self._next = None
            self._acknowledge_pending(keep_hold=False)
        return tally.result(tally.stop)

    def run(self, stop_event: threading.Event) -> SyncResult:
        """Sync until ``stop_event`` is set, or until the collector refuses the configuration;
        returns the totals of every round.

        Between rounds it waits ``interval`` (drained) or the backoff delay (unavailable);
        a set ``stop_event`` ends the wait at once, and a request in flight is finished first.
        """
        total = SyncResult(stopped="stop_requested")
        while True:
            result = self.sync_once(stop_event)
            total = _add(total, result)
            if result.stopped in ("unauthorized", "rejected", "stop_requested"):
                return total
            delay = self.options.interval if result.stopped == "drained" else self._backoff.delay(None)
            if self._backoff.wait(delay, stop_event):
                return replace(total, stopped="stop_requested", error=None)

    def _release_hold(self) -> None:
        try:
            self.buffer.hold(0, 0)
        except TelemetryError:
            pass  # the hold expires on its own

    def close(self) -> None:
        """Close the HTTP client if this service created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SyncService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches --------------------------------------------------------------------------

    def _encode(self, records: Sequence[StoredRecord], tally: _Tally) -> Batch:
        """The records as sent, cut at ``max_batch_bytes``; unreadable ones are dead-lettered."""
        batch, unreadable = encode(records, self.options.max_batch_bytes, packed=self._wire.packed)
        if unreadable:
            moved = self.buffer.dead_letter(unreadable, batch_id="", status=0, reason="stored payload unreadable")
            tally.dead_lettered += moved
        return batch

    def _deliver(
        self,
        items: list[Item],
        tally: _Tally,
        stop_event: threading.Event,
        *,
        prefetch: bool = False,
        body: Body | None = None,
        batch: Batch | None = None,
        held: bool = False,
    ) -> bool:
        """Send one batch, splitting on 413; sets ``tally.stop`` when sending must stop.

        True when the collector acknowledged the whole batch in one answer. With
        ``prefetch``, the next batch is read, encoded and compressed while the first
        attempt is in flight (into ``self._next``), so the device prepares while the
        collector stores. ``body`` is this batch's, prepared that way; ``batch`` holds
        its records, already encoded; ``held``: the hold already covers it. Such a
        batch's acknowledgement (the local delete) is deferred until the next request is
        on its way, so the collector is not left idle while the device deletes.
        """
        batch_id = batch_id_of(items)
        started = time.monotonic()
        defer = prefetch
        while True:
            if not held:
                # Hold the batch against drop_oldest while it is in flight (and a little after).
                self.buffer.hold(max(item.rowid for item in items), self._hold_seconds)
            prepared = body if body is not None and self._wire.fits(body) and not (body.carries_lost and self._fold_lost) else None
            sent = prepared or self._body(batch_id, items, batch)
            answer = self._post(items, tally if prefetch else None, sent)
            prefetch, body, held = False, None, False
            status = answer.status
            if status is not None and 200 <= status < 300:
                self._backoff.failures = 0
                if defer:
                    self._receipts.defer(batch_id, items, answer, tally, started)
                else:
                    self._receipts.acknowledge(batch_id, items, answer, tally, started)
                return True
            if status == 413:
                if len(items) > 1:
                    log.info("batch %s: collector says too large (413); splitting %d records", batch_id[:12], len(items))
                    half = len(items) // 2
                    for part in (items[:half], items[half:]):
                        self._deliver(part, tally, stop_event)
                        if tally.stop is not None:
                            return False
                    return False
                self._receipts.dead_letter(batch_id, items, 413, f"a single record is over the collector's size limit: {answer.problem}", tally, started)
                return False
            if status in (400, 422) and sent.carries_lost and answer.problem.startswith("counters"):
                log.warning(
                    "the collector does not take the 'lost' counter (%s: %s); sending lost records inside 'dropped' from now on",
                    status, answer.problem,
                )
                self._fold_lost = True
                continue
            if status in (400, 422):
                self._receipts.dead_letter(batch_id, items, status, answer.problem, tally, started)
                return False
            if status in (401, 403):
                tally.stop = "unauthorized"
                tally.error = (
                    f"the collector at {self.endpoint} refused this device's token ({status}: {answer.problem}); "
                    "check the --token-file content against the token `edgepack token add` issued for this device. "
                    "No records were deleted."
                )
                log.error("%s", tally.error)
                return False
            if status == 415 and self._wire.step_down(answer.problem):
                batch = None  # encoded for the format just given up
                continue
            if status is None or status in _TRANSIENT or status >= 500:
                tally.retries += 1
                tally.attempts += 1
                self._backoff.failures += 1
                what = answer.problem if status is None else f"{status}: {answer.problem}"
                if tally.attempts >= self.options.max_attempts:
                    tally.stop = "unavailable"
                    tally.error = f"the collector at {self.endpoint} is unavailable ({what}) after {tally.attempts} attempts; records are kept for the next round"
                    log.warning("%s", tally.error)
                    return False
                delay = self._backoff.delay(answer.retry_after)
                log.warning("batch %s: %s; retrying in %.1f s", batch_id[:12], what, delay)
                if self._backoff.wait(delay, stop_event):
                    tally.stop = "stop_requested"
                    return False
                continue
            tally.stop = "rejected"
            tally.error = (
                f"the collector answered {status} to POST {self.url} ({answer.problem}); "
                "expected 200: check --endpoint (the collector's base URL, e.g. http://host:8787). No records were deleted."
            )
            log.error("%s", tally.error)
            return False

    def _acknowledge_pending(self, *, keep_hold: bool) -> None:
        self._receipts.settle(keep_hold=keep_hold)

    @property
    def _hold_seconds(self) -> float:
        return 2 * self.options.request_deadline + 5

    def _prefetch(self, after: int, tally: _Tally) -> None:
        try:
            records = self.buffer.oldest(self.options.batch_size, after=after)
            if not records:
                return  # read again after the acknowledgement: records may arrive meanwhile
            batch = self._encode(records, tally)
            # Extend the hold over the next batch too: drop_oldest would otherwise pick
            # exactly these rows, the oldest ones not in flight.
            self.buffer.hold(records[-1].rowid, self._hold_seconds)
            body = self._body(batch_id_of(batch.items), batch.items, batch) if batch.items else None
        except TelemetryError as exc:
            log.debug("reading the next batch ahead failed (%s); it is read again after this one", exc)
            return
        self._next = Prefetch(records=len(records), batch=batch, body=body)

    # -- HTTP -----------------------------------------------------------------------------

    def _body(self, batch_id: str, items: list[Item], batch: Batch | None = None) -> Body:
        """The request body in the current wire format, with the current counters;
        ``batch``'s records are reused if they are encoded for that format."""
        if batch is not None and batch.packed == self._wire.packed:
            records = batch.records
        else:
            records = (packed_records if self._wire.packed else json_records)(items)
        return self._wire.body(batch_id, records, self._counters())

    def _counters(self) -> dict[str, int]:
        """The buffer's counters as sent: ``lost`` only once there is something to report
        (so a collector that does not know it is not troubled), or inside ``dropped``."""
        counters = self.buffer.counters()
        lost = counters.pop("lost", 0)
        if lost and self._fold_lost:
            counters["dropped"] += lost
        elif lost:
            counters["lost"] = lost
        return counters

    def _post(self, items: list[Item], prefetch_tally: _Tally | None, prepared: Body) -> Answer:
        headers = {**self._headers, "Content-Type": prepared.media_type}
        if prepared.encoding != "identity":
            headers["Content-Encoding"] = prepared.encoding

        def meanwhile() -> None:
            # The batch before this one was stored by the collector: delete it here while
            # this request travels (a crash first only means it is sent again).
            self._acknowledge_pending(keep_hold=True)
            if prefetch_tally is not None:
                self._prefetch(items[-1].rowid, prefetch_tally)

        return post(self._client, self.url, prepared.data, headers, deadline=self.options.request_deadline,
                    clock=self._clock, meanwhile=meanwhile)
