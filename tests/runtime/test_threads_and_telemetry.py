"""Many threads on one model, and the telemetry hook: right fields, failures counted not raised."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import runtime
from runtime import TelemetrySink

from . import builder


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    frame = builder.fire_frame(n, seed=seed)[0]
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for i in range(0, n, 7):
        rows[i]["region"] = "highlands"  # some flagged rows too
    return rows


def test_eight_threads_give_the_serial_results(fire_model: runtime.EdgeModel) -> None:
    rows = _rows(400, seed=21)
    serial = [fire_model.predict(row) for row in rows]
    start = threading.Barrier(8)

    def work(offset: int) -> list[tuple[int, dict]]:
        start.wait()
        out = []
        for i in range(offset, len(rows), 8):
            out.append((i, fire_model.predict(rows[i])))
        # Mixed call styles on the same model at the same time.
        out.append((-1, fire_model.predict(rows[offset : offset + 5])))  # type: ignore[arg-type]
        return out

    with ThreadPoolExecutor(8) as pool:
        parallel = [item for chunk in pool.map(work, range(8)) for item in chunk]
    by_index = {i: r for i, r in parallel if i >= 0}
    assert [by_index[i] for i in range(len(rows))] == serial
    batches = [r for i, r in parallel if i < 0]
    assert batches == [serial[o : o + 5] for o in range(8)]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def record(self, *, model: str, version: str, bundle_sha256: str, inputs: Any, outputs: Any, flags: Any) -> None:
        with self.lock:
            self.calls.append(
                {"model": model, "version": version, "bundle_sha256": bundle_sha256, "inputs": inputs, "outputs": outputs, "flags": flags}
            )


class Broken:
    def __init__(self) -> None:
        self.attempts = 0

    def record(self, **fields: Any) -> None:
        self.attempts += 1
        raise OSError("disk full")


def test_recorder_satisfies_the_protocol() -> None:
    assert isinstance(Recorder(), TelemetrySink)


def test_telemetry_gets_each_prediction(fire: builder.Built, good_row: dict) -> None:
    sink = Recorder()
    model = runtime.load(fire.path, telemetry=sink)
    assert sink.calls == []  # the self-test and warm-up are not predictions
    result = model.predict({**good_row, "humidity_pct": None, "region": "highlands", "extra": 1})
    (call,) = sink.calls
    assert call["model"] == "fire-risk" and call["version"] == "1" and call["bundle_sha256"] == fire.bundle.sha256
    assert call["inputs"] == {**good_row, "humidity_pct": None, "region": "highlands"}
    assert call["outputs"] == {"prediction": result["prediction"], "probabilities": result["probabilities"]}
    assert call["flags"] == ["unseen_category:region"] == result["flags"]
    # The sink gets copies: changing the result later does not change what was recorded.
    result["flags"].append("mine")
    result["probabilities"][0] = -1.0
    assert call["flags"] == ["unseen_category:region"] and call["outputs"]["probabilities"][0] != -1.0


def test_telemetry_for_lists_frames_and_batches(fire: builder.Built, good_row: dict) -> None:
    sink = Recorder()
    model = runtime.load(fire.path, telemetry=sink)
    model.predict([good_row, {**good_row, "temp c": 99.0}])
    model.predict_batch({k: [v] for k, v in good_row.items()})
    model.predict(builder.fire_frame(3, seed=4)[0])
    assert len(sink.calls) == 2 + 1 + 3
    assert sink.calls[1]["flags"] == ["out_of_range:temp c"]
    assert sink.calls[2]["inputs"] == good_row
    assert all(set(c["outputs"]) == {"prediction", "probabilities"} for c in sink.calls)


def test_regression_telemetry_outputs(burn: builder.Built, good_row: dict) -> None:
    sink = Recorder()
    model = runtime.load(burn.path, telemetry=sink)
    result = model.predict(good_row)
    assert sink.calls[0]["outputs"] == {"prediction": result["prediction"]}


def test_failing_telemetry_is_counted_and_logged_once(fire: builder.Built, good_row: dict, caplog: pytest.LogCaptureFixture) -> None:
    sink = Broken()
    model = runtime.load(fire.path, telemetry=sink)
    with caplog.at_level(logging.WARNING, logger="runtime.model"):
        results = [model.predict(good_row) for _ in range(5)]
        model.predict([good_row, good_row])
    assert all(r["prediction"] in (0, 1) for r in results)
    assert sink.attempts == 7
    assert model.telemetry_errors == 7
    warnings = [r for r in caplog.records if "telemetry record() failed" in r.getMessage()]
    assert len(warnings) == 1 and "OSError: disk full" in warnings[0].getMessage()


def test_telemetry_errors_counted_across_threads(fire: builder.Built, good_row: dict) -> None:
    model = runtime.load(fire.path, telemetry=Broken())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: model.predict(good_row), range(200)))
    assert model.telemetry_errors == 200


def test_telemetry_without_record_is_refused(fire: builder.Built) -> None:
    with pytest.raises(TypeError, match="telemetry must have a record"):
        runtime.load(fire.path, telemetry=object())  # type: ignore[arg-type]


def test_with_a_real_telemetry_buffer(tmp_path, fire: builder.Built, good_row: dict) -> None:  # type: ignore[no-untyped-def]
    import telemetry

    with telemetry.Buffer(tmp_path / "predictions.db") as buffer:
        model = runtime.load(fire.path, telemetry=buffer)
        model.predict(good_row)
        model.predict([{**good_row, "region": "highlands"}, {**good_row, "humidity_pct": None}])
        model.predict_batch({k: [v] for k, v in good_row.items()})
        buffer.flush()
        assert buffer.pending() == 4
    assert model.telemetry_errors == 0


class ValuesRecorder(Recorder):
    """A sink with the optional ``record_values`` fast path."""

    def record_values(self, *, model: str, version: str, bundle_sha256: str, names: Any, values: Any, outputs: Any, flags: Any) -> None:
        with self.lock:
            self.calls.append(
                {"model": model, "version": version, "bundle_sha256": bundle_sha256, "names": names, "values": values,
                 "outputs": outputs, "flags": flags}
            )


def test_a_sink_with_record_values_gets_names_and_values_tuples(fire: builder.Built, good_row: dict) -> None:
    sink = ValuesRecorder()
    model = runtime.load(fire.path, telemetry=sink)
    first = model.predict({**good_row, "humidity_pct": None, "region": "highlands"})
    model.predict([good_row, {**good_row, "temp c": 99.0}])
    model.predict_batch({k: [v] for k, v in good_row.items()})  # columns keep using record(mapping)
    single, listed, flagged = (c for c in sink.calls if "names" in c)
    assert len([c for c in sink.calls if "names" not in c]) == 1
    assert sorted(single["names"]) == sorted(model.feature_names) and type(single["values"]) is tuple
    assert single["names"] is listed["names"] is flagged["names"]  # one object: an identity check per record
    assert dict(zip(single["names"], single["values"])) == {**good_row, "humidity_pct": None, "region": "highlands"}
    assert dict(zip(listed["names"], listed["values"])) == good_row
    assert single["outputs"] == {"prediction": first["prediction"], "probabilities": first["probabilities"]}
    assert list(single["flags"]) == ["unseen_category:region"] and list(flagged["flags"]) == ["out_of_range:temp c"]
