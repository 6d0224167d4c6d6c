"""Every bad request gets its precise status and message, and stores nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.collector import RunningCollector

from .batches import batch, post
from .cases import CASES, LIMITS, Case


@pytest.fixture(scope="module")
def small_collector(store_collector: Callable[..., RunningCollector]) -> Iterator[RunningCollector]:
    running = store_collector("bad-input", **LIMITS)
    yield running
    running.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_request_is_refused_and_stores_nothing(small_collector: RunningCollector, case: Case) -> None:
    records_before = small_collector.records()
    devices_before = small_collector.devices()

    answer = case.send(small_collector)

    assert answer.status == case.status, answer.body
    assert isinstance(answer.body, dict) and set(answer.body) == {"error"}, answer.body
    assert case.message in answer.body["error"]
    if case.status == 401:
        assert answer.headers.get("www-authenticate", "").startswith("Bearer")
    assert small_collector.records() == records_before
    assert small_collector.devices() == devices_before


def test_collector_still_accepts_after_every_refusal(small_collector: RunningCollector) -> None:
    # Refusals must not leave the service wedged (half-read bodies, open transactions).
    for case in CASES:
        case.send(small_collector)
    before = len(small_collector.records())
    response = post(small_collector.url, small_collector.token, batch(LIMITS["max_records"]), gzipped=True)
    assert response.status_code == 200
    assert response.json() == {"accepted": LIMITS["max_records"], "duplicates": 0}
    assert len(small_collector.records()) == before + LIMITS["max_records"]


def test_batch_at_the_limits_is_accepted(small_collector: RunningCollector) -> None:
    # The limits are inclusive: a body just under max_decompressed and max_records passes.
    document = batch(LIMITS["max_records"])
    document["records"][0]["inputs"] = {"pad": "0" * (LIMITS["max_decompressed_bytes"] - 8 * 1024)}
    response = post(small_collector.url, small_collector.token, document, gzipped=True)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == LIMITS["max_records"]
