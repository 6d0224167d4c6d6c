"""What the feedback step of a sync does with answers a real collector cannot give on demand
(httpx.MockTransport): labels are kept on every failure, and records still sync."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

import telemetry
from telemetry import SyncService


def _buffer(tmp_path: Path) -> telemetry.Buffer:
    buffer = telemetry.Buffer(tmp_path / "p.db")
    ids = [buffer.record(model="m", version="1", bundle_sha256="a" * 64, inputs={"x": i}, outputs={"prediction": 1},
                         flags=[]) for i in range(3)]
    for i, record_id in enumerate(ids):
        buffer.feedback(record_id, i % 2)
    return buffer


def _service(buffer: telemetry.Buffer, feedback_answer: httpx.Response, seen: list) -> SyncService:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/batches":
            return httpx.Response(200, json={"accepted": 3, "duplicates": 0})
        seen.append(json.loads(request.content))
        return feedback_answer

    return SyncService(buffer, "http://home:8787", token="t", client=httpx.Client(transport=httpx.MockTransport(handler)),
                       options=telemetry.SyncOptions(max_attempts=1))


def test_a_collector_that_is_down_keeps_the_labels_and_the_round_reports_it(tmp_path: Path) -> None:
    seen: list = []
    with _buffer(tmp_path) as buffer:
        result = _service(buffer, httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "1"}), seen).sync_once()
        assert result.stopped == "unavailable" and "kept for the next round" in result.error
        assert result.sent == 3 and buffer.pending() == 0  # the records went
        assert buffer.pending_feedback() == 3
    assert [label["label"] for label in seen[0]["labels"]] == [0, 1, 0] and len(seen[0]["batch_id"]) == 64


def test_a_collector_without_feedback_keeps_the_labels_without_failing_the_records(tmp_path: Path) -> None:
    with _buffer(tmp_path) as buffer:
        service = _service(buffer, httpx.Response(404, json={"error": "POST /v1/feedback: Not Found"}), [])
        result = service.sync_once()
        assert result.stopped == "drained" and service.last_feedback.stopped == "unsupported"
        assert buffer.pending_feedback() == 3


def test_a_refused_token_stops_and_keeps_the_labels(tmp_path: Path) -> None:
    with _buffer(tmp_path) as buffer:
        result = _service(buffer, httpx.Response(401, json={"error": "token"}), []).sync_once()
        assert result.stopped == "unauthorized" and buffer.pending_feedback() == 3


def test_a_batch_refused_as_a_whole_moves_to_feedback_refused(tmp_path: Path) -> None:
    import sqlite3

    with _buffer(tmp_path) as buffer:
        service = _service(buffer, httpx.Response(422, json={"error": "batch_id: nonsense"}), [])
        assert service.sync_once().stopped == "drained"
        assert service.last_feedback.refused == 3 and buffer.pending_feedback() == 0
    with sqlite3.connect(tmp_path / "p.db") as conn:
        reasons = [row[0] for row in conn.execute("SELECT reason FROM feedback_refused")]
    assert reasons == ["422: batch_id: nonsense"] * 3
