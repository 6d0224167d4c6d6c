"""The OpenAPI document describes exactly what the app serves and answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from home import CollectorSettings, add_token, create_app
from tests.support.collector import RunningCollector, start_collector

from .batches import batch, post
from .cases import CASES, LIMITS

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    collector = start_collector(Path(tmp_path_factory.mktemp("openapi")), **LIMITS)
    yield collector
    collector.stop()


@pytest.fixture(scope="module")
def spec(running: RunningCollector) -> dict[str, Any]:
    response = httpx.get(f"{running.url}/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item}


def _statuses(spec: dict[str, Any], path: str, method: str) -> set[int]:
    return {int(code) for code in spec["paths"][path][method.lower()]["responses"]}


def test_spec_lists_every_route_and_method_of_the_app(tmp_path: Path, spec: dict[str, Any]) -> None:
    add_token(tmp_path / "tokens.json", "d1")
    app = create_app(CollectorSettings(db_path=tmp_path / "c.db", tokens_path=tmp_path / "tokens.json"))
    # Starlette answers HEAD wherever it answers GET; OpenAPI leaves HEAD implied by GET.
    served = {(route.path, method) for route in app.routes if isinstance(route, Route) for method in route.methods or () if method != "HEAD"}
    assert served == _operations(spec)


def test_methods_outside_the_spec_are_refused(running: RunningCollector, spec: dict[str, Any]) -> None:
    for path in spec["paths"]:
        for method in METHODS:
            if (path, method) in _operations(spec):
                continue
            response = httpx.request(method, f"{running.url}{path}", headers={"Authorization": f"Bearer {running.token}"})
            assert response.status_code == 405, (method, path)
            assert "error" in response.json()
    assert httpx.get(f"{running.url}/v1/nothing-here").status_code == 404


def test_batch_statuses_in_the_spec_are_exactly_those_the_app_answers(running: RunningCollector, spec: dict[str, Any]) -> None:
    # One case per status is enough here; test_bad_input runs them all.
    observed = {case.send(running).status for case in {case.status: case for case in CASES}.values()}
    observed.add(post(running.url, running.token, batch(2)).status_code)
    document = batch(1)
    with sqlite3.connect(running.db_path) as connection:
        connection.execute("CREATE TRIGGER fail BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'full'); END")
    connection.close()
    try:
        failed = post(running.url, running.token, document)
    finally:
        with sqlite3.connect(running.db_path) as connection:
            connection.execute("DROP TRIGGER fail")
        connection.close()
    assert "Retry-After" in failed.headers
    observed.add(failed.status_code)

    assert _statuses(spec, "/v1/batches", "post") == observed
    assert "Retry-After" in spec["paths"]["/v1/batches"]["post"]["responses"]["503"]["headers"]


def test_other_statuses_in_the_spec_are_exactly_those_the_app_answers(running: RunningCollector, spec: dict[str, Any]) -> None:
    stats = {
        httpx.get(f"{running.url}/v1/stats").status_code,
        httpx.get(f"{running.url}/v1/stats", headers={"Authorization": "Bearer wrong"}).status_code,
        httpx.get(f"{running.url}/v1/stats", headers={"Authorization": f"Bearer {running.token}"}).status_code,
        # A device token asking for another device's stats.
        httpx.get(
            f"{running.url}/v1/stats", params={"device": "someone-else"}, headers={"Authorization": f"Bearer {running.token}"}
        ).status_code,
    }
    # A real read failure: the table the stats come from is briefly gone.
    with sqlite3.connect(running.db_path) as connection:
        connection.execute("ALTER TABLE devices RENAME TO devices_away")
    connection.close()
    try:
        failed = httpx.get(f"{running.url}/v1/stats", headers={"Authorization": f"Bearer {running.token}"})
    finally:
        with sqlite3.connect(running.db_path) as connection:
            connection.execute("ALTER TABLE devices_away RENAME TO devices")
        connection.close()
    assert failed.headers["Retry-After"] == "5" and "no such table" in failed.json()["error"]
    stats.add(failed.status_code)
    assert running.stats()["records"] >= 0
    assert _statuses(spec, "/v1/stats", "get") == stats
    assert _statuses(spec, "/healthz", "get") == {httpx.get(f"{running.url}/healthz").status_code}
    assert _statuses(spec, "/openapi.json", "get") == {httpx.get(f"{running.url}/openapi.json").status_code}


def test_spec_states_the_running_limits_and_the_contract_fields(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["Batch"]["properties"]["records"]["maxItems"] == LIMITS["max_records"]
    body = spec["paths"]["/v1/batches"]["post"]["requestBody"]["description"]
    assert str(LIMITS["max_body_bytes"]) in body and str(LIMITS["max_decompressed_bytes"]) in body
    assert set(schemas["Record"]["required"]) == {"id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags"}
    assert set(schemas["Counters"]["required"]) == {"dropped", "sampled_out", "dead_lettered"}
    assert schemas["Counters"]["maxProperties"] == 32 and schemas["Counters"]["additionalProperties"]["minimum"] == 0
    batches = spec["paths"]["/v1/batches"]["post"]["responses"]
    assert "Retry-After" in batches["429"]["headers"] and "1.5 s" in batches["408"]["description"]
    assert {"deviceToken", "adminToken"} == set(spec["components"]["securitySchemes"])
    assert set(schemas["BatchResult"]["required"]) == {"accepted", "duplicates"}
    assert {"records", "devices", "by_model", "dropped", "dead_lettered"} <= set(schemas["Stats"]["required"])
    assert spec["paths"]["/v1/batches"]["post"]["security"] == [{"deviceToken": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_stats_answer_has_the_keys_the_spec_promises(running: RunningCollector, spec: dict[str, Any]) -> None:
    schema = spec["components"]["schemas"]["Stats"]
    for stats in (running.stats(), running.stats(running.add_admin("spec-admin"))):
        assert set(schema["properties"]) == set(stats)
        assert set(schema["required"]) <= set(stats)
        assert stats["scope"] in schema["properties"]["scope"]["enum"]


def test_spec_describes_both_body_formats_and_encodings(spec: dict[str, Any]) -> None:
    post_batch = spec["paths"]["/v1/batches"]["post"]
    assert set(post_batch["requestBody"]["content"]) == {"application/json", "application/vnd.edgepack.batch.v1+msgpack"}
    encoding = next(p for p in post_batch["parameters"] if p["name"] == "Content-Encoding")
    assert set(encoding["schema"]["enum"]) == {"zstd", "gzip", "identity"}
    group = spec["components"]["schemas"]["PackedGroup"]
    assert set(group["required"]) == {"model", "version", "bundle_sha256", "inputs", "ids", "ts", "records"}
    assert spec["components"]["schemas"]["PackedBatch"]["required"] == ["batch_id", "groups"]
