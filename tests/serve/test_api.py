"""``edgepack serve`` on a unix socket: the Open Inference Protocol V2, /v1/predict, bad input.

One real server per test module (a subprocess); every answer is compared with what
``runtime.load(...).predict`` gives in this process for the same rows.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import runtime

from .support import ServeProcess, served, v2_inputs, wire

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(fire_v1, keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-api")
    process = ServeProcess.start(
        [str(fire_v1.path), "--public-key", str(keys[1]), "--buffer", str(tmp / "predictions.db"), "--max-body-bytes", str(MAX_BODY)],
        tmp,
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def model(fire_v1, keys) -> runtime.EdgeModel:
    return runtime.load(fire_v1.path, public_key=keys[1])


def test_socket_is_owner_only(server: ServeProcess) -> None:
    mode = os.stat(server.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_health_endpoints(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/fire-risk/ready").json() == {"name": "fire-risk", "ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "edgepack" and server["extensions"] == []


def test_model_metadata_comes_from_the_manifest(client: httpx.Client, fire_v1, model: runtime.EdgeModel) -> None:
    for path in ("/v2/models/fire-risk", "/v2/models/fire-risk/versions/1"):
        meta = client.get(path).json()
        assert meta["name"] == "fire-risk" and meta["versions"] == ["1"]
        expected = [
            {"name": f["name"], "datatype": {"float32": "FP32", "string": "BYTES"}[f["dtype"]], "shape": [-1]}
            for f in fire_v1.manifest["inputs"]
        ]
        assert meta["inputs"] == expected
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["prediction"] == {"name": "prediction", "datatype": "INT64", "shape": [-1]}
        assert outputs["probabilities"]["shape"] == [-1, 2]
        assert json.loads(outputs["probabilities"]["parameters"]["classes"]) == list(model.classes)


def test_v2_infer_answers_what_the_runtime_predicts(client: httpx.Client, model: runtime.EdgeModel, rows: list[dict]) -> None:
    expected = model.predict(rows)
    answer = client.post("/v2/models/fire-risk/infer", json={"id": "req-7", "inputs": v2_inputs(model, rows)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "fire-risk" and body["model_version"] == "1" and body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["prediction"]["shape"] == [len(rows)]
    assert outputs["prediction"]["data"] == [e["prediction"] for e in expected]
    assert outputs["probabilities"]["shape"] == [len(rows), 2]
    assert outputs["probabilities"]["data"] == [e["probabilities"][c] for e in expected for c in model.classes]
    assert [json.loads(f) for f in outputs["flags"]["data"]] == [e["flags"] for e in expected]


def test_v2_infer_one_row_with_a_version_nested_shape_and_chosen_outputs(client: httpx.Client, model: runtime.EdgeModel, rows) -> None:
    inputs = v2_inputs(model, rows[:1])
    for tensor in inputs:
        tensor["shape"] = [1, 1]
        tensor["data"] = [tensor["data"]]
    answer = client.post(
        "/v2/models/fire-risk/versions/1/infer", json={"inputs": inputs, "outputs": [{"name": "probabilities"}]}
    )
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]
    expected = model.predict(rows[0])
    assert outputs[0]["data"] == [expected["probabilities"][c] for c in model.classes]


def test_v1_predict_answers_exactly_what_predict_returns(client: httpx.Client, model: runtime.EdgeModel, rows) -> None:
    one = client.post("/v1/predict", json=rows[0])
    assert one.status_code == 200 and served(one.json()) == wire(model.predict(rows[0]))
    many = client.post("/v1/predict", json=rows)
    assert many.status_code == 200 and served(many.json()) == wire(model.predict(rows))
    with pytest.raises(runtime.InputError) as raised:
        model.predict([])
    empty = client.post("/v1/predict", json=[])
    assert empty.status_code == 422 and empty.json() == {"error": str(raised.value)}


def test_an_input_error_is_422_with_the_runtimes_message(client: httpx.Client, model: runtime.EdgeModel, rows) -> None:
    bad = dict(rows[0], region=7)
    with pytest.raises(runtime.InputError) as raised:
        model.predict(bad)
    answer = client.post("/v1/predict", json=bad)
    assert answer.status_code == 422
    assert answer.json() == {"error": str(raised.value)}
    assert "region" in answer.json()["error"]
    missing = {k: v for k, v in rows[0].items() if k != "wind_kmh"}
    answer = client.post("/v1/predict", json=[rows[1], missing])
    assert answer.status_code == 422 and "wind_kmh" in answer.json()["error"] and "row 1" in answer.json()["error"]
    assert client.post("/v1/predict", json="hello").status_code == 422


def test_a_bool_for_a_number_is_refused_over_v2(client: httpx.Client, model: runtime.EdgeModel, rows) -> None:
    inputs = v2_inputs(model, rows[:2])
    inputs[0]["data"] = [True, 3.0]
    answer = client.post("/v2/models/fire-risk/infer", json={"inputs": inputs})
    assert answer.status_code == 422
    assert "'temp c'" in answer.json()["error"] and "element 0" in answer.json()["error"]


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (lambda t: t[0].update(datatype="BYTES"), 422, ["'temp c'", "BYTES", "FP32"]),
        (lambda t: t[3].update(datatype="FP32", data=[1.0, 2.0]), 422, ["'region'", "strings", "BYTES"]),
        (lambda t: t[0].update(datatype="FLOAT"), 422, ["'temp c'", "FLOAT"]),
        (lambda t: t[1].update(shape=[3]), 422, ["'humidity_pct'", "shape [3]"]),
        (lambda t: t[1].update(shape=[2, 2]), 422, ["'humidity_pct'", "shape [2, 2]"]),
        (lambda t: t[2].update(shape=[1], data=[1.0]), 422, ["'wind_kmh'", "1 rows"]),
        (lambda t: t[0].update(data=["hot", 1.0]), 422, ["'temp c'", "element 0"]),
        (lambda t: t[4].update(data=["grass", 5]), 422, ["'vegetation'", "element 1"]),
        (lambda t: t[0].update(name="temperature"), 422, ["'temperature'", "temp c"]),
        (lambda t: t.append(dict(t[0])), 422, ["'temp c'", "twice"]),
        (lambda t: t[3].update(data=["north", "mars"]), 200, []),  # unseen category: flagged, not refused
    ],
)
def test_v2_tensor_errors_name_the_input(client: httpx.Client, model: runtime.EdgeModel, rows, change, status, words) -> None:
    inputs = v2_inputs(model, rows[:2])
    change(inputs)
    answer = client.post("/v2/models/fire-risk/infer", json={"inputs": inputs})
    assert answer.status_code == status, answer.text
    for word in words:
        assert word in answer.json()["error"]


def test_protocol_errors(client: httpx.Client, model: runtime.EdgeModel, rows) -> None:
    inputs = v2_inputs(model, rows[:1])
    cases = [
        (client.post("/v2/models/fire-risk/infer", content=b'{"inputs": ['), 400, "not valid JSON"),
        (client.post("/v1/predict", content=b"{'temp c': 1}"), 400, "not valid JSON"),
        (client.post("/v1/predict", content=b'{"temp c": NaN}'), 400, "not valid JSON"),
        (client.post("/v2/models/fire-risk/infer", json={"inputs": "x"}), 400, "'inputs'"),
        (client.post("/v2/models/fire-risk/infer", json=[1]), 400, "JSON object"),
        (client.post("/v2/models/other/infer", json={"inputs": inputs}), 404, "'other'"),
        (client.post("/v2/models/fire-risk/versions/9/infer", json={"inputs": inputs}), 404, "version '9'"),
        (client.get("/v2/models/other"), 404, "'other'"),
        (client.get("/v2/models/fire-risk/versions/2"), 404, "version '2'"),
        (client.post("/v2/models/fire-risk/infer", json={"inputs": inputs, "outputs": [{"name": "logits"}]}), 422, "'logits'"),
        (client.get("/v1/predict"), 405, "POST"),
        (client.post("/v2/health/ready"), 405, "GET"),
        (client.get("/nowhere"), 404, "/nowhere"),
    ]
    for answer, status, word in cases:
        assert answer.status_code == status, (answer.request.url, answer.text)
        assert word in answer.json()["error"], answer.text
    assert client.get("/v1/predict").headers["allow"] == "POST"
    assert client.post("/v2/models/fire-risk").headers["allow"] == "GET"


def test_a_body_over_the_limit_is_413(client: httpx.Client, server: ServeProcess, rows) -> None:
    big = rows * (2 * MAX_BODY // len(json.dumps(rows)) + 2)
    answer = client.post("/v1/predict", json=big)
    assert answer.status_code == 413
    assert str(MAX_BODY) in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b"["
        for _ in range(MAX_BODY // 100 + 1):
            yield json.dumps(rows[0]).encode() + b","
        yield b"{}]"

    answer = client.post("/v1/predict", content=chunks())
    assert answer.status_code == 413
    assert client.get("/v2/health/ready").status_code == 200  # still serving


def test_every_prediction_is_recorded_in_the_buffer(fire_v1, keys, rows, tmp_path: Path) -> None:
    import telemetry

    db = tmp_path / "predictions.db"
    process = ServeProcess.start([str(fire_v1.path), "--public-key", str(keys[1]), "--buffer", str(db)], tmp_path)
    model = runtime.load(fire_v1.path, public_key=keys[1])
    with process.client() as client:
        assert client.post("/v1/predict", json=rows[:7]).status_code == 200
        assert client.post("/v1/predict", json=rows[0]).status_code == 200
        assert client.post("/v2/models/fire-risk/infer", json={"inputs": v2_inputs(model, rows[:4])}).status_code == 200
        assert client.post("/v1/predict", json={"temp c": "x"}).status_code == 422  # refused: not recorded
    assert process.stop() == 0
    with telemetry.Buffer(db) as buffer:
        assert buffer.pending() == 12
        records = buffer.oldest(100)
    assert len(records) == 12
