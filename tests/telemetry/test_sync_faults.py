"""The sync service against answers a real collector cannot give on demand (MockTransport)."""

from __future__ import annotations

import email.utils
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import telemetry
from telemetry import SyncOptions, SyncService

from .fake import FakeCollector, error
from .records import SHA, fill, record, seqs

URL = "http://collector.test:8787"


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[telemetry.Buffer]:
    with telemetry.Buffer(tmp_path / "p.db") as opened:
        yield opened


def service(buffer: telemetry.Buffer, fake: FakeCollector, delays: list[float] | None = None, **options: object) -> SyncService:
    sleeps = delays if delays is not None else []
    return SyncService(
        buffer, URL, token="device-token", client=fake.client(), options=SyncOptions(**options),  # type: ignore[arg-type]
        sleep=sleeps.append, rng=lambda: 1.0,
    )


@pytest.mark.parametrize("wire", ["json", "packed"])
def test_batches_follow_the_http_contract(buffer: telemetry.Buffer, wire: str) -> None:
    fill(buffer, 25)
    fake = FakeCollector()
    result = service(buffer, fake, batch_size=10, wire=wire, zstd=wire == "packed").sync_once()
    assert (result.stopped, result.batches, result.sent, result.accepted, result.duplicates) == ("drained", 3, 25, 25, 0)
    # Batches travel two at a time (SyncOptions.in_flight): they may arrive in either order.
    assert sorted(len(sent.body["records"]) for sent in fake.requests) == [5, 10, 10]
    first = fake.requests[0]
    assert first.headers["Authorization"] == "Bearer device-token"
    if wire == "json":
        assert first.headers["Content-Type"] == "application/json"
        assert first.headers["Content-Encoding"] == "gzip"
    else:
        assert first.headers["Content-Type"] == "application/vnd.edgepack.batch.v1+msgpack"
        assert first.headers["Content-Encoding"] == "zstd"
    ids = [r["id"] for r in first.body["records"]]
    assert first.body["batch_id"] == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    assert first.body["counters"] == {"dropped": 0, "sampled_out": 0, "dead_lettered": 0}
    sample = first.body["records"][0]
    assert set(sample) == {"id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags"}
    assert (sample["model"], sample["version"], sample["bundle_sha256"]) == ("fire-risk", "3", SHA)
    assert isinstance(sample["ts"], float) and sample["flags"] == ["out_of_range:temp_c"]
    assert fake.seqs() == list(range(25))
    assert buffer.pending() == 0 and buffer.stats().delivered == 25


@pytest.mark.parametrize("wire", ["json", "packed"])
def test_the_byte_cap_cuts_batches_before_the_record_count_does(buffer: telemetry.Buffer, wire: str) -> None:
    import msgspec

    for seq in range(12):
        record(buffer, seq, note="z" * 400)
    fake = FakeCollector()
    result = service(buffer, fake, batch_size=100, max_batch_bytes=2048, wire=wire).sync_once()
    assert result.sent == 12 and len(fake.requests) > 1
    for sent in fake.requests:
        if wire == "json":
            size = sum(len(httpx.Request("POST", URL, json=r).content) for r in sent.body["records"])
        else:
            size = sum(len(msgspec.msgpack.encode([list(r["inputs"].values()), r["outputs"], r["flags"]])) + 44
                       for r in sent.body["records"])
        assert len(sent.body["records"]) == 1 or size <= 2048


def test_retry_after_is_honoured_then_the_batch_goes_through(buffer: telemetry.Buffer) -> None:
    fill(buffer, 5)
    delays: list[float] = []
    fake = FakeCollector(script=[error(503, "overloaded", **{"Retry-After": "7"}), error(429, "slow down", **{"Retry-After": "3"})])
    result = service(buffer, fake, delays, backoff_base=0.5).sync_once()
    assert result.stopped == "drained" and result.sent == 5 and result.retries == 2
    assert delays[0] == 7.0  # the jittered window (0.5 s) is shorter than what the server asked
    assert delays[1] == 3.0
    assert len(fake.requests) == 3
    assert len({sent.body["batch_id"] for sent in fake.requests}) == 1  # a resend carries the same id


def test_retry_after_as_an_http_date(buffer: telemetry.Buffer) -> None:
    fill(buffer, 1)
    delays: list[float] = []
    now = 1_800_000_000.0
    when = email.utils.formatdate(now + 120, usegmt=True)
    fake = FakeCollector(script=[error(503, "maintenance", **{"Retry-After": when}), error(503, "again", **{"Retry-After": "soon"})])
    sync = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(backoff_base=0.1),
                       sleep=delays.append, rng=lambda: 1.0, clock=lambda: now)
    assert sync.sync_once().sent == 1
    assert delays == [120.0, 0.2]  # an unreadable Retry-After falls back to the backoff window


def test_backoff_doubles_with_full_jitter_up_to_the_cap(buffer: telemetry.Buffer) -> None:
    fill(buffer, 3)
    delays: list[float] = []
    fake = FakeCollector(script=[error(500, "boom")] * 6)
    result = service(buffer, fake, delays, backoff_base=1.0, backoff_cap=10.0, max_attempts=10).sync_once()
    assert result.sent == 3 and result.retries == 6
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # rng = 1.0: the top of each window

    jittered: list[float] = []
    fill(buffer, 1, start=3)
    quarter = SyncService(
        buffer, URL, token="t", client=FakeCollector(script=[error(502)] * 3).client(),
        options=SyncOptions(backoff_base=4.0, backoff_cap=100.0), sleep=jittered.append, rng=lambda: 0.25,
    )
    assert quarter.sync_once().sent == 1
    assert jittered == [1.0, 2.0, 4.0]  # a quarter of 4, 8, 16


def test_retry_after_longer_than_the_cap_is_bounded_by_it(buffer: telemetry.Buffer) -> None:
    fill(buffer, 1)
    delays: list[float] = []
    fake = FakeCollector(script=[error(503, "come back tomorrow", **{"Retry-After": "86400"})])
    assert service(buffer, fake, delays, backoff_cap=300.0).sync_once().sent == 1
    assert delays == [300.0]


@pytest.mark.parametrize(
    "fault",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out"), httpx.RemoteProtocolError("server hung up")],
    ids=["connect", "timeout", "protocol"],
)
def test_network_faults_are_retried_and_finally_give_up_keeping_the_records(buffer: telemetry.Buffer, fault: Exception) -> None:
    fill(buffer, 4)
    delays: list[float] = []
    fake = FakeCollector(script=[fault] * 10)
    result = service(buffer, fake, delays, max_attempts=3).sync_once()
    assert result.stopped == "unavailable" and not result.ok
    assert "unavailable" in (result.error or "") and "kept" in (result.error or "")
    assert len(fake.requests) == 3 and len(delays) == 2
    assert buffer.pending() == 4 and seqs(buffer.path) == [0, 1, 2, 3]


def test_413_splits_the_batch_until_the_parts_fit(buffer: telemetry.Buffer) -> None:
    fill(buffer, 10)
    fake = FakeCollector(rule=lambda body: error(413, "body too large") if len(body["records"]) > 3 else None)
    result = service(buffer, fake, batch_size=10).sync_once()
    assert result.stopped == "drained" and result.sent == 10 and result.dead_lettered == 0
    assert fake.seqs() == list(range(10))
    assert [len(sent.body["records"]) for sent in fake.requests] == [10, 5, 2, 3, 5, 2, 3]


def test_a_single_record_too_large_for_the_collector_is_dead_lettered(buffer: telemetry.Buffer) -> None:
    fill(buffer, 3)
    record(buffer, 3, blob="x" * 5000)
    fill(buffer, 2, start=4)

    def too_big(body: dict) -> httpx.Response | None:
        return error(413, "over 4096 bytes") if any("blob" in r["inputs"] for r in body["records"]) else None

    fake = FakeCollector(rule=too_big)
    result = service(buffer, fake, batch_size=10).sync_once()
    assert result.stopped == "drained" and result.dead_lettered == 1
    assert fake.seqs() == [0, 1, 2, 4, 5]
    assert buffer.dead_lettered() == 1 and buffer.pending() == 0


@pytest.mark.parametrize("in_flight", [1, 2])
@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_batch_is_dead_lettered_once_and_the_rest_goes_on(
    buffer: telemetry.Buffer, tmp_path: Path, status: int, in_flight: int
) -> None:
    fill(buffer, 25)

    def poison(body: dict) -> httpx.Response | None:
        if any(r["inputs"]["seq"] == 7 for r in body["records"]):
            return error(status, "records[2].inputs: expected an object")
        return None

    fake = FakeCollector(rule=poison)
    result = service(buffer, fake, batch_size=5, in_flight=in_flight).sync_once()
    assert result.stopped == "drained" and result.dead_lettered == 5 and result.sent == 20
    assert fake.seqs() == [0, 1, 2, 3, 4, *range(10, 25)]
    assert len(fake.requests) == 5  # the refused batch is never retried
    # The gap travels home with every batch built after the refusal: with one batch in
    # flight, the very next one; with two, the one after it (the next was on its way).
    # (Batches in flight together may reach the collector in either order: sorted.)
    carried = sorted(sent.body["counters"]["dead_lettered"] for sent in fake.requests)
    assert carried == ([0, 0, 5, 5, 5] if in_flight == 1 else [0, 0, 0, 5, 5])
    connection = sqlite3.connect(str(tmp_path / "p.db"))
    rows = connection.execute("SELECT status, reason, batch_id FROM dead_letters").fetchall()
    connection.close()
    assert len(rows) == 5 and {row[0] for row in rows} == {status}
    assert rows[0][1] == "records[2].inputs: expected an object"
    # The refused batch's own id (with two in flight it may have arrived first or second).
    refused = [sent.body["batch_id"] for sent in fake.requests if poison(sent.body) is not None]
    assert len(refused) == 1 and {row[2] for row in rows} == set(refused)
    assert buffer.stats().dead_lettered == 5 and buffer.pending() == 0


@pytest.mark.parametrize("in_flight", [1, 2])
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_stops_sending_and_keeps_everything(buffer: telemetry.Buffer, status: int, in_flight: int) -> None:
    fill(buffer, 12)
    fake = FakeCollector(rule=lambda body: error(status, "unknown device token"))
    result = service(buffer, fake, batch_size=5, in_flight=in_flight).sync_once()
    assert result.stopped == "unauthorized" and not result.ok
    assert "token" in (result.error or "") and "--token-file" in (result.error or "") and str(status) in (result.error or "")
    assert len(fake.requests) == in_flight and result.sent == 0  # what was in flight, nothing after the refusal
    assert buffer.pending() == 12 and buffer.dead_lettered() == 0


def test_415_falls_back_to_identity_encoding(buffer: telemetry.Buffer) -> None:
    fill(buffer, 6)

    fake = FakeCollector()
    original = fake.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Content-Encoding") == "gzip":
            return error(415, "unsupported Content-Encoding 'gzip'; expected identity")
        return original(request)

    sync = SyncService(buffer, URL, token="t", client=httpx.Client(transport=httpx.MockTransport(handler)),
                       options=SyncOptions(batch_size=3, zstd=False), sleep=lambda s: None)
    result = sync.sync_once()
    assert result.sent == 6 and fake.seqs() == list(range(6))
    assert all("Content-Encoding" not in sent.headers for sent in fake.requests)


def test_an_unexpected_answer_stops_with_a_hint_about_the_endpoint(buffer: telemetry.Buffer) -> None:
    fill(buffer, 2)
    fake = FakeCollector(rule=lambda body: httpx.Response(404, text="Not Found"))
    result = service(buffer, fake).sync_once()
    assert result.stopped == "rejected" and "--endpoint" in (result.error or "") and "404" in (result.error or "")
    assert buffer.pending() == 2


def test_every_request_has_an_overall_deadline(buffer: telemetry.Buffer) -> None:
    fill(buffer, 2)
    release = threading.Event()

    def hang(body: dict) -> httpx.Response | None:
        release.wait(30)  # a collector that accepted the connection and never answers
        return None

    fake = FakeCollector(script=[hang])
    try:
        result = service(buffer, fake, request_deadline=0.3, max_attempts=1).sync_once()
    finally:
        release.set()
    assert result.stopped == "unavailable" and "0.3 s request deadline" in (result.error or "")
    assert buffer.pending() == 2


def test_run_stops_during_a_backoff_wait(buffer: telemetry.Buffer) -> None:
    fill(buffer, 2)
    stop = threading.Event()
    waited: list[float] = []

    def sleep(delay: float) -> None:
        waited.append(delay)
        stop.set()  # SIGTERM arrives while waiting

    sync = SyncService(buffer, URL, token="t", client=FakeCollector(rule=lambda b: error(503)).client(), sleep=sleep)
    result = sync.run(stop)
    assert result.stopped == "stop_requested" and len(waited) == 1
    assert buffer.pending() == 2


def test_run_keeps_syncing_new_records_between_intervals(buffer: telemetry.Buffer) -> None:
    fill(buffer, 3)
    stop = threading.Event()
    fake = FakeCollector()
    rounds: list[float] = []

    def sleep(delay: float) -> None:
        rounds.append(delay)
        if len(rounds) == 1:
            fill(buffer, 2, start=3)  # the app recorded more while sync slept
        else:
            stop.set()

    sync = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(interval=12.0), sleep=sleep)
    result = sync.run(stop)
    assert (result.stopped, result.sent, result.batches) == ("stop_requested", 5, 2)  # totals of both rounds
    assert rounds == [12.0, 12.0] and fake.seqs() == [0, 1, 2, 3, 4]


def test_an_unreadable_stored_record_is_dead_lettered_not_retried_forever(buffer: telemetry.Buffer, tmp_path: Path) -> None:
    for seq in range(3):  # one chunk each: a damaged chunk makes all its records unreadable
        record(buffer, seq)
        buffer.flush()
    buffer._call(lambda store: store.db.execute("UPDATE chunks SET payload = x'00ff00' WHERE id = 2"))
    fake = FakeCollector()
    result = service(buffer, fake).sync_once()
    assert result.sent == 2 and result.dead_lettered == 1 and fake.seqs() == [0, 2]


@pytest.mark.parametrize(
    ("endpoint", "token", "message"),
    [
        ("collector:8787", "t", "expected an http:// or https:// URL"),
        ("http://", "t", "expected an http:// or https:// URL"),
        ("http://127.0.0.1:8787", "", "non-empty"),
        ("http://127.0.0.1:8787", "two words", "without spaces"),
    ],
)
def test_bad_configuration_is_refused_up_front(buffer: telemetry.Buffer, endpoint: str, token: str, message: str) -> None:
    with pytest.raises(telemetry.SyncConfigError, match=message):
        SyncService(buffer, endpoint, token=token)


def test_bad_options_name_the_limit(buffer: telemetry.Buffer) -> None:
    with pytest.raises(telemetry.OptionsError, match="batch_size=6000: expected 1 to 5000"):
        SyncOptions(batch_size=6000)


def test_a_batch_in_flight_is_not_dropped_when_the_buffer_overflows_meanwhile(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", max_bytes=12_000) as buffer:
        fill(buffer, 10)

        def overflow_while_in_flight(body: dict) -> httpx.Response | None:
            # The app keeps recording while the first batch travels, far past max_bytes.
            for seq in range(100, 160):
                record(buffer, seq, pad="p" * 300)
            buffer.flush()
            return None

        fake = FakeCollector(script=[overflow_while_in_flight])
        result = SyncService(buffer, URL, token="t", client=fake.client(), options=SyncOptions(batch_size=10)).sync_once()
        stats = buffer.stats()
    arrived = fake.seqs()
    assert result.stopped == "drained" and arrived[:10] == list(range(10))
    assert stats.dropped > 0 and stats.pending == 0
    # Every record is counted once: delivered or dropped, never both.
    assert stats.delivered == len(arrived) and stats.delivered + stats.dropped == stats.recorded == 70


def test_dead_letters_are_bounded_but_stay_counted(tmp_path: Path) -> None:
    with telemetry.Buffer(tmp_path / "p.db", max_bytes=30_000) as buffer:
        fill(buffer, 60)
        fake = FakeCollector(rule=lambda body: error(422, "schema changed"))
        result = service(buffer, fake, batch_size=5).sync_once()
        assert result.dead_lettered == 60 and buffer.dead_lettered() == 60
        kept = buffer._call(lambda store: store.db.execute("SELECT count(*), sum(size), min(id) FROM dead_letters").fetchone())
    count, size, oldest = kept
    assert 0 < count < 60 and size <= 7_500  # a quarter of max_bytes
    assert oldest > 1  # the oldest went first


def _held_upto(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT value FROM counters WHERE name = 'held_upto'").fetchone()[0]
    finally:
        connection.close()


@pytest.mark.parametrize("in_flight", [1, 2])
def test_the_next_batch_is_prepared_and_held_while_one_is_in_flight(tmp_path: Path, in_flight: int) -> None:
    path = tmp_path / "p.db"
    ahead = min(25, 10 * (in_flight + 1))  # the batches in flight and the one read ahead
    with telemetry.Buffer(path) as buffer:
        fill(buffer, 25)
        seen: list[int] = []

        def wait_for_the_next_batch(body: dict) -> None:
            # The first request is answered only once the sync has read the batch(es) after
            # it and extended the hold over them: preparation overlaps the request.
            deadline = time.monotonic() + 10
            while _held_upto(path) < ahead and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(_held_upto(path))
            return None

        fake = FakeCollector(script=[wait_for_the_next_batch])
        result = service(buffer, fake, batch_size=10, in_flight=in_flight).sync_once()
        stats = buffer.stats()
        held_after = _held_upto(path)
    assert seen == [ahead]
    assert (result.stopped, result.batches, result.sent) == ("drained", 3, 25)
    assert sorted([r["inputs"]["seq"] for r in sent.body["records"]] for sent in fake.requests) == [
        list(range(10)), list(range(10, 20)), list(range(20, 25))
    ]
    assert stats.delivered == 25 and stats.pending == 0
    assert held_after == 0  # released at the end of the round


def test_a_failed_batch_is_retried_before_the_prepared_one_and_nothing_is_sent_twice(buffer: telemetry.Buffer) -> None:
    fill(buffer, 30)

    def refuse_then_add(body: dict) -> httpx.Response:
        # While batch 2 is refused, the app records more: nothing prepared earlier may be sent stale.
        fill(buffer, 3, start=100)
        return error(503, "busy")

    fake = FakeCollector(script=[lambda body: None, refuse_then_add])
    result = service(buffer, fake, batch_size=10, in_flight=1).sync_once()
    sent = [[r["inputs"]["seq"] for r in s.body["records"]] for s in fake.requests]
    assert result.stopped == "drained" and result.retries == 1
    assert sent[:3] == [list(range(10)), list(range(10, 20)), list(range(10, 20))]
    assert fake.seqs() == [*range(30), 100, 101, 102]
    assert buffer.pending() == 0 and buffer.stats().delivered == 33


def test_sync_side_commits_skip_the_fsync_and_restore_full_durability(buffer: telemetry.Buffer) -> None:
    fill(buffer, 12)
    result = service(buffer, FakeCollector(), batch_size=5).sync_once()
    assert result.sent == 12
    # Holds, deletes and dead letters commit with synchronous=NORMAL; recording must still be FULL (2).
    assert buffer._call(lambda store: store.db.execute("PRAGMA synchronous").fetchone()[0]) == 2


def test_gzip_level_is_an_option(buffer: telemetry.Buffer) -> None:
    fill(buffer, 40)
    sizes = {}
    for level in (0, 9):
        fake = FakeCollector(rule=lambda body: error(503, "keep them"))
        service(buffer, fake, gzip_level=level, max_attempts=1, zstd=False).sync_once()
        sizes[level] = fake.requests[0].raw_size
    assert sizes[9] < sizes[0] / 2
    with pytest.raises(telemetry.OptionsError, match="gzip_level=10"):
        SyncOptions(gzip_level=10)
