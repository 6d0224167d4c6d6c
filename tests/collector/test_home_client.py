"""``home.client.request_json``: the one authenticated JSON request of every home client
(``edgepack stats``, ``report --endpoint``, ``bundles upload``), and its errors."""

from __future__ import annotations

import httpx
import pytest

from home.client import StatsError, fetch_stats, request_json
from home.monitoring.client import MonitoringHttpError, fetch_report


def _transport(status: int, body: bytes, content_type: str = "application/json") -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return httpx.MockTransport(answer)


def test_a_refusal_names_the_status_the_route_the_collector_s_error_and_the_hint() -> None:
    transport = _transport(403, b'{"error": "admin token required"}')
    with pytest.raises(StatsError) as info:
        fetch_stats("http://home:8787/", "tok", transport=transport)
    message = str(info.value)
    assert info.value.status == 403
    assert "403 to GET http://home:8787/v1/stats" in message
    assert "admin token required" in message and "edgepack token add --admin" in message
    with pytest.raises(MonitoringHttpError) as report:
        fetch_report("http://home:8787", "tok", "fire-risk", transport=transport)
    assert report.value.status == 403 and "monitoring needs an admin token" in str(report.value)


def test_an_answer_that_is_not_a_json_object_is_refused_naming_what_came() -> None:
    with pytest.raises(StatsError, match=r"answered 200 without a JSON object \(got '\[1, 2\]'\)"):
        fetch_stats("http://home:8787", "tok", transport=_transport(200, b"[1, 2]"))
    with pytest.raises(StatsError, match="answered 200 without stats"):
        fetch_stats("http://home:8787", "tok", transport=_transport(200, b'{"devices": 1}'))
    with pytest.raises(MonitoringHttpError, match="502 to GET http://home:8787/v1/report: <html>bad gateway"):
        fetch_report("http://home:8787", "tok", "m", transport=_transport(502, b"<html>bad gateway", "text/html"))


def test_a_refused_connection_is_retried_for_wait_seconds_then_named() -> None:
    calls: list[float] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1.0)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(201, json={"ok": True})

    body = request_json("POST", "http://home:8787/v1/bundles", "tok", error=MonitoringHttpError, hints={},
                        timeout=5.0, transport=httpx.MockTransport(refuse), wait=5.0, content=b"x")
    assert body == {"ok": True} and len(calls) == 3
    calls.clear()
    with pytest.raises(MonitoringHttpError, match="cannot reach the collector at http://home:8787/v1/bundles.*check --endpoint"):
        request_json("POST", "http://home:8787/v1/bundles", "tok", error=MonitoringHttpError, hints={},
                     timeout=5.0, transport=httpx.MockTransport(refuse), wait=0.0)
    assert len(calls) == 1
