"""Clients that are not Python: curl (--unix-socket and loopback TCP) and a small Node.js
client, against a real ``edgepack serve``; answers are checked against the in-process runtime.

curl and node come from Debian (scripts/install-test-tools.sh installs them); CI runs
this, so a missing tool fails there instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import runtime

from .support import v2_inputs, wire

NODE_CLIENT = r"""
// Predicts through edgepack serve's unix socket with nothing but Node's http module.
const http = require("http");
const fs = require("fs");
const [socketPath, rowsFile] = process.argv.slice(2);
const rows = JSON.parse(fs.readFileSync(rowsFile, "utf8"));

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      { socketPath, path, method, headers: payload ? { "content-type": "application/json", "content-length": payload.length } : {} },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
      },
    );
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

(async () => {
  const ready = await call("GET", "/v2/health/ready");
  const meta = JSON.parse((await call("GET", "/v2/models/fire-risk")).body);
  const inputs = meta.inputs.map((i) => ({ name: i.name, datatype: i.datatype, shape: [rows.length], data: rows.map((r) => r[i.name]) }));
  const infer = await call("POST", `/v2/models/${meta.name}/versions/${meta.versions[0]}/infer`, { inputs });
  const v1 = await call("POST", "/v1/predict", rows);
  const bad = await call("POST", "/v1/predict", { "temp c": "hot" });
  console.log(JSON.stringify({
    ready: ready.status, infer: JSON.parse(infer.body), v1: JSON.parse(v1.body), bad: { status: bad.status, body: JSON.parse(bad.body) },
  }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed: run scripts/install-test-tools.sh"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def model(fire_v1, keys) -> runtime.EdgeModel:
    return runtime.load(fire_v1.path, public_key=keys[1])


def test_curl_over_the_unix_socket_and_loopback(serve_process, fire_v1, keys, model, rows) -> None:
    curl = _tool("curl")
    on_socket = serve_process(str(fire_v1.path), "--public-key", str(keys[1]))
    on_tcp = serve_process(str(fire_v1.path), "--public-key", str(keys[1]), socket=False)
    expected = model.predict(rows)
    for where in (["--unix-socket", str(on_socket.socket_path), "http://localhost"], [on_tcp.address]):
        base = where[-1]
        prefix = [curl, "-sS", *where[:-1]]
        ready = subprocess.run([*prefix, "-o", "/dev/null", "-w", "%{http_code}", f"{base}/v2/health/ready"], capture_output=True, text=True)
        assert ready.stdout == "200", ready.stderr
        v1 = subprocess.run(
            [*prefix, "-H", "content-type: application/json", "--data-binary", json.dumps(rows), f"{base}/v1/predict"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(v1.stdout) == wire(expected)
        body = json.dumps({"inputs": v2_inputs(model, rows)})
        v2 = subprocess.run(
            [*prefix, "--data-binary", body, f"{base}/v2/models/fire-risk/infer"], capture_output=True, text=True, check=True
        )
        outputs = {o["name"]: o for o in json.loads(v2.stdout)["outputs"]}
        assert outputs["prediction"]["data"] == [e["prediction"] for e in expected]
        assert outputs["probabilities"]["data"] == [e["probabilities"][c] for e in expected for c in model.classes]
        bad = subprocess.run(
            [*prefix, "-w", "\n%{http_code}", "--data-binary", '{"temp c": ', f"{base}/v1/predict"], capture_output=True, text=True
        )
        assert bad.stdout.splitlines()[-1] == "400"


def test_a_node_client_predicts_like_the_runtime(serve_process, fire_v1, keys, model, rows, tmp_path: Path) -> None:
    node = _tool("node")
    served = serve_process(str(fire_v1.path), "--public-key", str(keys[1]))
    (tmp_path / "client.js").write_text(NODE_CLIENT)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    done = subprocess.run(
        [node, str(tmp_path / "client.js"), str(served.socket_path), str(tmp_path / "rows.json")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    expected = model.predict(rows)
    assert got["ready"] == 200
    assert got["v1"] == wire(expected)
    outputs = {o["name"]: o for o in got["infer"]["outputs"]}
    assert got["infer"]["model_version"] == "1"
    assert outputs["prediction"]["data"] == [e["prediction"] for e in expected]
    assert outputs["probabilities"]["data"] == [e["probabilities"][c] for e in expected for c in model.classes]
    assert got["bad"]["status"] == 422 and "temp c" in got["bad"]["body"]["error"]


@pytest.mark.parametrize("which", ["levels", "burn"])
def test_string_labels_and_regression_over_v2(serve_process, which: str, request: pytest.FixtureRequest) -> None:
    built = request.getfixturevalue(which)
    from .support import json_rows

    rows = json_rows(built.frame, 12)
    model = runtime.load(built.path)
    served = serve_process(str(built.path), "--allow-unsigned")
    with served.client() as client:
        meta = client.get(f"/v2/models/{model.name}").json()
        outputs = {o["name"]: o for o in client.post(f"/v2/models/{model.name}/infer", json={"inputs": v2_inputs(model, rows)}).json()["outputs"]}
        assert client.post("/v1/predict", json=rows).json() == wire(model.predict(rows))
    expected = model.predict(rows)
    assert outputs["prediction"]["data"] == [e["prediction"] for e in expected]
    if which == "levels":
        assert {o["name"]: o["datatype"] for o in meta["outputs"]}["prediction"] == "BYTES"
        assert outputs["probabilities"]["shape"] == [12, len(model.classes)]
    else:
        assert {o["name"] for o in meta["outputs"]} == {"prediction", "flags"}
        assert outputs["prediction"]["datatype"] == "FP64"
