"""``edgepack serve --store`` follows the store: a bundle switch under load fails no request,
and every answer comes from the old bundle or the new one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

import runtime
from runtime.store import ModelStore

from .support import edgepack, v2_inputs, wire

CLIENTS = 8


def test_a_switch_under_load_fails_no_request(serve_process, fire_v1, fire_v2, keys, rows, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    served = serve_process("--store", str(store), "--public-key", str(keys[1]))
    old = runtime.load(fire_v1.path, public_key=keys[1])
    new = runtime.load(fire_v2.path, public_key=keys[1])
    batch = rows[:5]
    answers = {"1": wire(old.predict(batch)), "2": wire(new.predict(batch))}
    assert answers["1"] != answers["2"]  # the two versions tell apart on these rows
    v2_body = {"inputs": v2_inputs(old, batch)}
    stop = threading.Event()
    seen: list[tuple[str, int, str]] = []  # (endpoint, status, version answered)
    failures: list[str] = []

    def hammer(index: int) -> None:
        with served.client() as client:
            while not stop.is_set():
                try:
                    if index % 2:
                        response = client.post("/v1/predict", json=batch)
                        body = response.json()
                        version = next((v for v, a in answers.items() if a == body), "?")
                        seen.append(("v1", response.status_code, version))
                    else:
                        response = client.post("/v2/models/fire-risk/infer", json=v2_body)
                        body = response.json()
                        version = body.get("model_version", "?")
                        predictions = {o["name"]: o["data"] for o in body.get("outputs", [])}.get("prediction")
                        if version in answers and predictions != [a["prediction"] for a in answers[version]]:
                            version = "mismatch"
                        seen.append(("v2", response.status_code, version))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        installed = edgepack("install", str(fire_v2.path), "--store", str(store), "--public-key", str(keys[1]))
        assert installed.returncode == 0, installed.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(v == "2" for _, _, v in seen[-CLIENTS:]):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(seen) > 200
    assert {status for _, status, _ in seen} == {200}
    assert {version for _, _, version in seen} == {"1", "2"}  # old then new, nothing else
    versions = [version for _, _, version in seen]
    assert versions[-CLIENTS:] == ["2"] * CLIENTS
    assert "now serving fire-risk v2" in served.log
    with served.client() as client:
        assert client.get("/v2/models/fire-risk").json()["versions"] == ["2"]
        assert client.get("/v2/models/fire-risk/versions/1").status_code == 404


def test_serve_follows_a_rollback_and_refuses_a_schema_change(serve_process, fire_v1, fire_v2, levels, keys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for bundle in (fire_v1, fire_v2):
        assert edgepack("install", str(bundle.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    served = serve_process("--store", str(store), "--public-key", str(keys[1]))

    def version() -> str:
        with served.client() as client:
            return client.get("/v2/models/fire-risk").json()["versions"][0]

    def wait_for(value: str) -> None:
        deadline = time.monotonic() + 20
        while version() != value:
            assert time.monotonic() < deadline, served.log
            time.sleep(0.1)

    assert version() == "2"
    assert edgepack("store", "rollback", "--store", str(store)).returncode == 0
    wait_for("1")
    # Another model (unsigned, other inputs) forced into the store: serve keeps the current one.
    ModelStore(store).install(levels.path, allow_downgrade=True)
    deadline = time.monotonic() + 20
    while "cannot serve" not in served.log:
        assert time.monotonic() < deadline, served.log
        time.sleep(0.1)
    assert version() == "1"
    with served.client() as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_serve_on_an_empty_store_is_live_but_not_ready_until_an_install(serve_process, fire_v1, keys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    served = serve_process("--store", str(store), "--public-key", str(keys[1]))
    with served.client() as client:
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 400 and "not ready" in ready.json()["error"]
        assert client.post("/v1/predict", json={}).status_code == 503
        assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
        deadline = time.monotonic() + 20
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, served.log
            time.sleep(0.1)
        assert json.loads(client.get("/v2/models/fire-risk").text)["versions"] == ["1"]
