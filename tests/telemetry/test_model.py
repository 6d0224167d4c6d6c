"""Model-based test: any sequence of record / flush / sync / crash / overflow keeps the books.

Invariant after every step: delivered + pending + dropped + dead-lettered == recorded,
where "recorded" is what the model knows was acknowledged (records lost in a crash
before their flush were never acknowledged and are not counted). The collector side is
a scripted ``MockTransport`` (so syncs can fail on demand); it must never hold a record
twice, and everything it holds was recorded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import telemetry
from telemetry.buffer import _CLOSE

from .fake import FakeCollector, error
from .records import record

MAX_BYTES = 30_000
# One batch in flight: a scripted answer then goes to a known batch. With two, the batch
# read ahead may reach the collector first and take the scripted failure, while the
# first is stored; exactly-once still holds (tests/telemetry/test_crash.py), but what
# this model predicts ("nothing delivered") does not.
SYNC_OPTIONS = telemetry.SyncOptions(batch_size=7, max_attempts=1, in_flight=1)


class BufferMachine(RuleBasedStateMachine):
    @initialize(when_full=st.sampled_from(["drop_oldest", "drop_newest"]))
    def open(self, when_full: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="edgepack-model-"))
        self.options = telemetry.BufferOptions(
            max_bytes=MAX_BYTES, when_full=when_full, durability="process",  # type: ignore[arg-type]
            group_size=1_000_000, group_delay=3600.0,  # commit only when asked: crashes are then exact
        )
        self.buffer = telemetry.Buffer(self.directory / "p.db", self.options)
        self.fake = FakeCollector()
        self.recorded = 0  # acknowledged: committed by a flush or any other call into the buffer
        self.unacknowledged = 0
        self.next_seq = 0
        self.sent_seqs: set[int] = set()

    def teardown(self) -> None:
        if hasattr(self, "buffer"):
            self.buffer.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _record(self, count: int, size: int = 0) -> None:
        for _ in range(count):
            record(self.buffer, self.next_seq, **({"pad": "p" * size} if size else {}))
            self.next_seq += 1
        self.unacknowledged += count

    def _acknowledge(self) -> None:
        self.recorded += self.unacknowledged
        self.unacknowledged = 0

    def _sync(self, **script: object) -> telemetry.SyncResult:
        service = telemetry.SyncService(
            self.buffer, "http://collector.test", token="t", client=self.fake.client(),
            options=SYNC_OPTIONS, sleep=lambda delay: None,
        )
        result = service.sync_once()
        self._acknowledge()  # sync reads through the writer: everything before it is committed
        return result

    @rule(count=st.integers(1, 30))
    def record_some(self, count: int) -> None:
        self._record(count)

    @rule(count=st.integers(5, 40))
    def overflow(self, count: int) -> None:
        self._record(count, size=900)  # big rows: the byte bound is hit

    @rule()
    def flush(self) -> None:
        self.buffer.flush()
        self._acknowledge()

    @rule()
    def sync_ok(self) -> None:
        result = self._sync()
        assert result.stopped == "drained"
        assert self.buffer.pending() == 0

    @rule(status=st.sampled_from([429, 500, 503]))
    def sync_fails(self, status: int) -> None:
        before = self.buffer.pending()
        self.fake.script = [error(status, "busy", **{"Retry-After": "1"})]
        result = self._sync()
        self.fake.script = []
        if before:
            assert result.stopped == "unavailable"
        assert self.buffer.pending() == before

    @rule()
    def sync_answer_lost(self) -> None:
        # The collector stores the first batch but the answer never arrives (timeout).
        def store_then_time_out(request: httpx.Request) -> httpx.Response:
            self.fake.handler(request)
            raise httpx.ReadTimeout("answer lost")

        before = self.buffer.pending()
        service = telemetry.SyncService(
            self.buffer, "http://collector.test", token="t",
            client=httpx.Client(transport=httpx.MockTransport(store_then_time_out)),
            options=SYNC_OPTIONS, sleep=lambda delay: None,
        )
        service.sync_once()
        self._acknowledge()
        assert self.buffer.pending() == before  # kept: sent again next time, a duplicate at home

    @rule()
    def sync_refused(self) -> None:
        self.fake.script = [error(422, "records[0]: bad")]
        self._sync()
        self.fake.script = []

    @rule(lost=st.integers(0, 5))
    def crash_and_reopen(self, lost: int) -> None:
        # Records recorded after the last acknowledgement die with the process; the
        # writer is stopped where it stands, without committing what is queued.
        self._record(lost)
        self.buffer._closed = True
        self.buffer._queue.appendleft(_CLOSE)
        self.buffer._hurry.set()
        self.buffer._wake.set()
        self.buffer._thread.join()
        self.unacknowledged = 0
        self.buffer = telemetry.Buffer(self.directory / "p.db", self.options)

    @invariant()
    def books_balance(self) -> None:
        stats = self.buffer.stats()
        self._acknowledge()  # stats() committed everything recorded before it
        assert stats.delivered + stats.pending + stats.dropped + stats.dead_lettered == self.recorded
        assert stats.recorded == self.recorded
        assert stats.stored_bytes <= MAX_BYTES
        at_home = [record["inputs"]["seq"] for record in self.fake.stored.values()]
        assert len(at_home) == len(set(at_home)) and all(seq < self.next_seq for seq in at_home)
        assert len(at_home) >= stats.delivered


TestBufferMachine = BufferMachine.TestCase
TestBufferMachine.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
