"""More than one batch in flight (``SyncOptions.in_flight``): batches really travel at once,
answers are settled oldest first whatever order they come in, and a failure of one of
them, or a collector killed while they travel, neither loses nor duplicates a record."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import telemetry
from telemetry import SyncOptions, SyncService
from tests.support.collector import RunningCollector

from .fake import FakeCollector, error
from .records import fill, record, stored

URL = "http://collector.test:8787"
WAIT = 30.0  # generous: only a broken service ever waits this long


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[telemetry.Buffer]:
    with telemetry.Buffer(tmp_path / "p.db") as opened:
        for seq in range(30):
            record(opened, seq)
        opened.flush()
        yield opened


def deletes(buffer: telemetry.Buffer) -> list[list[int]]:
    """Record every ``acknowledge`` (the local delete) the sync service asks of ``buffer``."""
    calls: list[list[int]] = []
    original = buffer.acknowledge

    def acknowledge(rowids, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(rowids))
        return original(rowids, **kwargs)

    buffer.acknowledge = acknowledge  # type: ignore[method-assign]
    return calls


def seqs_of(body: dict) -> list[int]:
    return [r["inputs"]["seq"] for r in body["records"]]


def test_two_batches_travel_at_once(buffer: telemetry.Buffer) -> None:
    second_arrived = threading.Event()
    overlapped: list[bool] = []
    arrivals = iter(range(1_000))
    lock = threading.Lock()
    fake = FakeCollector()
    original = fake.handler

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            arrival = next(arrivals)
        if arrival == 0:
            # The first request is answered only once the second has arrived: with one
            # batch at a time that never happens (and the test fails after WAIT seconds).
            overlapped.append(second_arrived.wait(WAIT))
        else:
            second_arrived.set()
        return original(request)

    service = SyncService(buffer, URL, token="t", client=httpx.Client(transport=httpx.MockTransport(handler)),
                          options=SyncOptions(batch_size=10, in_flight=2))
    result = service.sync_once()
    assert overlapped == [True]
    assert (result.stopped, result.sent, result.accepted, result.duplicates) == ("drained", 30, 30, 0)
    assert fake.seqs() == list(range(30)) and buffer.pending() == 0


@pytest.mark.parametrize("failing", [0, 1], ids=["first-of-two", "second-of-two"])
def test_a_503_on_one_of_two_batches_in_flight_loses_nothing_duplicates_nothing_and_deletes_in_order(
    buffer: telemetry.Buffer, failing: int
) -> None:
    calls = deletes(buffer)
    both_arrived = threading.Barrier(2, timeout=WAIT)
    refused: list[list[int]] = []
    fake = FakeCollector()

    def rule(body: dict) -> httpx.Response | None:
        seqs = seqs_of(body)
        if seqs[0] in (0, 10) and len(fake.requests) <= 2:
            both_arrived.wait()  # both batches are in flight before either is answered
        if seqs[0] == 10 * failing and not refused:
            refused.append(seqs)
            return error(503, "busy", **{"Retry-After": "0"})
        return None

    fake.rule = rule
    delays: list[float] = []
    result = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=10, in_flight=2),
                         sleep=delays.append, rng=lambda: 0.0).sync_once()
    assert refused == [list(range(10 * failing, 10 * failing + 10))]
    assert (result.stopped, result.sent, result.accepted, result.duplicates, result.retries) == ("drained", 30, 30, 0, 1)
    assert len(delays) == 1
    # Each record reached home once, and the refused batch was sent again, once.
    assert fake.seqs() == list(range(30))
    sent = collections.Counter(seq for request in fake.requests for seq in seqs_of(request.body))
    assert {seq for seq, n in sent.items() if n > 1} == set(range(10 * failing, 10 * failing + 10))
    # Deleted oldest first, each batch once, whichever answer came first.
    flat = [rowid for call in calls for rowid in call]
    assert flat == sorted(flat) and len(flat) == len(set(flat)) == 30
    assert buffer.pending() == 0 and buffer.stats().delivered == 30


def test_a_stop_on_the_oldest_batch_deletes_nothing_after_it(buffer: telemetry.Buffer) -> None:
    calls = deletes(buffer)
    both_arrived = threading.Barrier(2, timeout=WAIT)
    fake = FakeCollector()

    def rule(body: dict) -> httpx.Response | None:
        if len(fake.requests) <= 2:
            both_arrived.wait()
        if seqs_of(body)[0] == 0:
            return error(401, "unknown device token")
        return None  # the second batch is stored at home

    fake.rule = rule
    result = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=10, in_flight=2)).sync_once()
    assert result.stopped == "unauthorized" and result.sent == 0
    assert calls == [] and buffer.pending() == 30
    # Sent again next round: what home already had is a duplicate, never stored twice.
    fake.rule = None
    again = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=10)).sync_once()
    assert (again.stopped, again.accepted, again.duplicates) == ("drained", 20, 10)
    assert fake.seqs() == list(range(30)) and buffer.pending() == 0


def test_answers_of_batches_sent_before_a_step_down_are_resent_not_stepped_down_again(buffer: telemetry.Buffer) -> None:
    both_arrived = threading.Barrier(2, timeout=WAIT)
    fake = FakeCollector()
    original = fake.handler
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("content-type"), request.headers.get("content-encoding")))
        if len(seen) <= 2:
            both_arrived.wait()
        if request.headers.get("content-encoding") == "zstd":
            return error(415, "Content-Encoding 'zstd' is not supported; send identity (no header) or gzip")
        return original(request)

    result = SyncService(buffer, URL, token="t", client=httpx.Client(transport=httpx.MockTransport(handler)),
                         options=SyncOptions(batch_size=10, in_flight=2)).sync_once()
    assert result.stopped == "drained" and result.sent == 30
    # Both batches in flight were refused; each was sent again with gzip, which the
    # collector takes: the second refusal did not step down to no compression.
    assert [encoding for _, encoding in seen] == ["zstd", "zstd", "gzip", "gzip", "gzip"]
    assert fake.seqs() == list(range(30))


def test_a_collector_killed_while_batches_travel_loses_and_duplicates_nothing(
    collector: RunningCollector, tmp_path: Path
) -> None:
    db = tmp_path / "k.db"
    with telemetry.Buffer(db) as buffer:
        fill(buffer, 500)
        ids = {row["id"] for row in stored(db)}
        killed: list[int] = []

        def kill_after_the_first(report: object) -> None:
            # The first batch is acknowledged; the next ones are on their way (or stored,
            # their answers not yet read) when the collector dies.
            if not killed:
                killed.append(1)
                collector.kill()

        first = SyncService(buffer, collector.url, token=collector.token, on_batch=kill_after_the_first,
                            options=SyncOptions(batch_size=50, in_flight=2, max_attempts=2), sleep=lambda s: None).sync_once()
        assert killed and first.stopped == "unavailable"
        assert buffer.pending() == 500 - first.sent
        collector.start()
        second = SyncService(buffer, collector.url, token=collector.token, options=SyncOptions(batch_size=50)).sync_once()
        assert second.stopped == "drained" and buffer.pending() == 0
    rows = collector.records(collector.device_id)
    assert len(rows) == 500 and {row["id"] for row in rows} == ids  # once each
    # What reached home before the kill but was not deleted came back as duplicates only:
    # whole batches, at most those that were in flight.
    assert first.accepted + second.accepted + second.duplicates == 500
    assert second.duplicates in (0, 50, 100)
