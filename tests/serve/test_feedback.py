"""``POST /v1/feedback`` on ``edgepack serve``: an app in any language labels the predictions
it was answered, by their ``record_id``, and the labels wait in the buffer for sync."""

from __future__ import annotations

from pathlib import Path

import telemetry

from .support import ServeProcess


def test_labels_for_served_predictions_are_queued_in_the_buffer(fire_v1, keys, rows, tmp_path: Path) -> None:
    db = tmp_path / "predictions.db"
    process = ServeProcess.start([str(fire_v1.path), "--public-key", str(keys[1]), "--buffer", str(db)], tmp_path)
    with process.client() as client:
        answers = client.post("/v1/predict", json=rows[:3]).json()
        ids = [answer["record_id"] for answer in answers]
        assert len(set(ids)) == 3

        one = client.post("/v1/feedback", json={"record_id": ids[0], "label": 1, "ts": 1_764_000_000.0})
        assert one.status_code == 200 and one.json() == {"queued": 1, "already_queued": 0}
        many = client.post("/v1/feedback", json=[{"record_id": ids[0], "label": 1}, {"record_id": ids[1], "label": 0}])
        assert many.json() == {"queued": 1, "already_queued": 1}

        # A different label for a queued record, a bad id, a bad shape: refused by name.
        changed = client.post("/v1/feedback", json={"record_id": ids[1], "label": 1})
        assert changed.status_code == 422 and ids[1] in changed.json()["error"]
        bad_id = client.post("/v1/feedback", json=[{"record_id": ids[2], "label": 0}, {"record_id": 123, "label": 0}])
        assert bad_id.status_code == 422 and bad_id.json()["error"].startswith("item 1: ")
        assert "items before it are queued: 1" in bad_id.json()["error"]
        shape = client.post("/v1/feedback", json={"id": ids[2], "label": 0})
        assert shape.status_code == 422 and "record_id" in shape.json()["error"]
        assert client.get("/v1/feedback").status_code == 405
    assert process.stop() == 0

    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 3
        assert buffer.pending_feedback() == 3  # ids[0], ids[1] and ids[2] (queued before the bad item)


def test_serve_without_a_buffer_says_how_to_take_feedback(fire_v1, keys, tmp_path: Path) -> None:
    process = ServeProcess.start([str(fire_v1.path), "--public-key", str(keys[1])], tmp_path)
    with process.client() as client:
        answer = client.post("/v1/feedback", json={"record_id": "x", "label": 1})
    assert process.stop() == 0
    assert answer.status_code == 404 and "--buffer" in answer.json()["error"]
