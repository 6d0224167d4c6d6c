"""The sync service: sends the buffer's oldest records home, exactly once, in batches.

Each round takes the oldest pending records (``batch_size``, cut at ``max_batch_bytes``
as encoded), sends them compressed in one ``POST /v1/batches`` with the device's bearer
token, and deletes them locally only after a 2xx, in one transaction. The body is the
MessagePack batch (the records as the buffer stores them, grouped by context; zstd when
``zstandard`` is installed, else gzip) or JSON: see ``telemetry.wire`` and
``telemetry.batch``. The ``batch_id`` is the
SHA-256 of the sorted record ids, so a resend after a crash carries the same id; the
collector stores each (device, record id) once, so a resend stores nothing twice.

The device and the collector work at the same time: ``in_flight`` batches (2 by
default) travel at once, each on a connection of its own, so the collector parses one
while it stores another, and one more is read, encoded and compressed meanwhile. Answers
are settled oldest first (``telemetry.window``), and records are deleted only after
their batch's 2xx; so a crash can leave up to ``in_flight + 1`` batches stored at home
but not yet deleted here: they are sent again and count as duplicates. Every batch in
flight or read ahead is held against ``drop_oldest``.

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
one batch until its answers settle it is ``telemetry.delivery``; backoff is
``telemetry.backoff``; acknowledgements and dead letters ``telemetry.receipts``.
Records are read as the bytes ``record()`` packed (``PackedRecord``) and sent as they are
stored, their framing checked. Records whose stored bytes are damaged (or hostile) are
dead-lettered, and sending goes on: a chunk whose framing is broken when the batch is
read (``telemetry.batch``); a record damaged inside intact framing when the collector
refuses its batch (400/422): the service then decodes the batch's records, sends the
others again and dead-letters those, each in its turn.

A round that drained the records then sends the queued labels (``Buffer.feedback``) to
``POST /v1/feedback``: see ``telemetry.feedback_sync``; ``last_feedback`` says how it went.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from .backoff import Backoff
from .batch import Batch, Item, encode, json_records, packed_records
from .buffer import Buffer
from .errors import SyncConfigError, TelemetryError
from .feedback_sync import FeedbackResult, FeedbackUploader
from .options import SyncOptions
from .outcomes import BatchReport, SyncResult, _add, _Tally
from .receipts import Receipts
from .request import Pending, check_endpoint, send
from .wire import Body, Wire
from .window import Window


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
        self._client = client or httpx.Client(limits=httpx.Limits(max_keepalive_connections=max(20, self.options.in_flight)))
        self._owns_client = client is None
        self._clock = clock
        self._wire = Wire(self.options)
        self._backoff = Backoff(self.options, sleep=sleep, rng=rng)
        self._receipts = Receipts(buffer, on_batch)
        # Collectors before the ``lost`` counter refuse unknown counter names (422 on
        # "counters"); for those, lost records are sent inside ``dropped`` instead.
        self._fold_lost = False
        # The highest row held against drop_oldest (0: no hold), and when the collector
        # last answered 2xx after transient failures: a batch sent before then that failed
        # transiently failed in the same outage, and is resent without counting again.
        self._held = 0
        self._recovered_at = float("-inf")
        # Labels (Buffer.feedback) go home after the records, at the end of a drained round.
        self._feedback = FeedbackUploader(self)
        self.last_feedback: FeedbackResult | None = None
        """What the feedback step of the last round did (None until one ran)."""

    # -- public ---------------------------------------------------------------------------

    def sync_once(self, stop_event: threading.Event | None = None) -> SyncResult:
        """Send batches until the buffer is drained or something stops it."""
        tally = _Tally()
        stop_event = stop_event or threading.Event()
        window = Window(self, tally, stop_event)
        settle = False
        try:
            window.run()
            settle = True
        finally:
            # After a stop, what the collector acknowledged meanwhile is deleted too; after an
            # exception nothing more is done (it is all sent again).
            window.close(settle=settle)
        if tally.stop == "drained":
            self.last_feedback = self._feedback.send(stop_event)
            if self.last_feedback.stopped in ("unavailable", "unauthorized"):
                tally.stop, tally.error = self.last_feedback.stopped, self.last_feedback.error
        return tally.result(tally.stop)

    def run(self, stop_event: threading.Event) -> SyncResult:
        """Sync until ``stop_event`` is set, or until the collector refuses the configuration;
        returns the totals of every round.

        Between rounds it waits ``interval`` (drained) or the backoff delay (unavailable);
        a set ``stop_event`` ends the wait at once, and requests in flight are finished first.
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

    def close(self) -> None:
        """Close the HTTP client if this service created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SyncService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches --------------------------------------------------------------------------

    def _encode(self, records: Sequence[Item]) -> tuple[Batch, list[int]]:
        """The records as sent, cut at ``max_batch_bytes``, and the unreadable ones before
        them (``telemetry.batch.encode``; to dead-letter)."""
        return encode(records, self.options.max_batch_bytes, packed=self._wire.packed)

    def _unreadable(self, rowids: list[int], tally: _Tally) -> None:
        tally.dead_lettered += self.buffer.dead_letter(rowids, batch_id="", status=0, reason="stored payload unreadable")
        self._rehold()

    @property
    def _hold_seconds(self) -> float:
        return 2 * self.options.request_deadline + 5

    def _hold(self, upto: int) -> None:
        """Hold rows up to ``upto`` (and any held already) against drop_oldest."""
        self._held = max(self._held, upto)
        self.buffer.hold(self._held, self._hold_seconds)

    def _rehold(self) -> None:
        # A dead letter ends the buffer's hold; batches still in flight need it back.
        if self._held:
            self.buffer.hold(self._held, self._hold_seconds)

    def _release_hold(self) -> None:
        self._held = 0
        try:
            self.buffer.hold(0, 0)
        except TelemetryError:
            pass  # the hold expires on its own

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

    def _fits(self, body: Body) -> bool:
        """Whether ``body`` (built earlier) is still what this service sends."""
        return self._wire.fits(body) and not (body.carries_lost and self._fold_lost)

    def _send(self, body: Body) -> Pending:
        headers = {**self._headers, "Content-Type": body.media_type}
        if body.encoding != "identity":
            headers["Content-Encoding"] = body.encoding
        return send(self._client, self.url, body.data, headers, deadline=self.options.request_deadline, clock=self._clock)
