"""The cost of a poll, and the release routes' access rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from edgepack.updates import GateOptions, UpdateLoop, UpdateOptions
from tests.runtime import builder

from .support import Device, Home


class Wire:
    """Bytes of each request and answer as HTTP/1.1 puts them on the wire (start line, headers, body)."""

    def __init__(self) -> None:
        self.exchanges: list[tuple[int, int, int]] = []

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=30, event_hooks={"response": [self._response]})

    def _response(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        sent = len(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n") + sum(
            len(k) + len(v) + 4 for k, v in request.headers.raw) + 2 + len(request.content)
        received = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n") + sum(
            len(k) + len(v) + 4 for k, v in response.headers.raw) + 2 + len(response.content)
        self.exchanges.append((response.status_code, sent, received))


def loop_for(device: Device, home: Home, client: httpx.Client) -> UpdateLoop:
    return UpdateLoop(UpdateOptions(
        store=device.store_root, endpoint=home.url, token=device.token_file.read_text(), device_id=device.device_id,
        trusted_root=home.trusted_root, public_key=device.public_key, gate=GateOptions(seconds=0),
    ), client=client)


def test_a_no_change_poll_is_one_conditional_request_under_2_kb(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("poller")
    home.repo.publish(bundles["v2"].path, public_key=keys[1])
    wire = Wire()
    loop = loop_for(device, home, wire.client())
    try:
        assert loop.poll_once().outcome == "installed"
        assert loop.poll_once().outcome == "gate_passed"
        wire.exchanges.clear()
        for _ in range(3):
            assert loop.poll_once().outcome == "unchanged"
        assert len(wire.exchanges) == 3
        for status, sent, received in wire.exchanges:
            assert status == 304
            assert sent + received < 2048, (sent, received)
        # A change at home is seen by the next poll.
        home.repo.promote(rollout=100.0)
        wire.exchanges.clear()
        assert loop.poll_once().outcome == "current"
        assert wire.exchanges[0][0] == 200
    finally:
        loop.close()


def test_release_routes_check_roles(home: Home, make_device: Callable[..., Device]) -> None:
    device = make_device("roles")
    token = device.token_file.read_text()

    def get(path: str, token: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(home.url + path, headers=headers, timeout=10)

    def post(body: Any, token: str) -> httpx.Response:
        return httpx.post(home.url + "/v1/releases/status", json=body, headers={"authorization": f"Bearer {token}"}, timeout=10)

    assert get("/v1/tuf/metadata/timestamp.json", None).status_code == 401
    assert get("/v1/tuf/metadata/timestamp.json", token).status_code == 200
    assert get("/v1/tuf/metadata/../tokens.json", token).status_code == 404
    assert get("/v1/tuf/targets/channels/" + "0" * 64 + ".stable.edgepkg", token).status_code == 404
    assert get("/v1/releases/fleet", token).status_code == 403
    assert get("/v1/releases/fleet", home.admin_token).status_code == 200
    answer = post({"release": 1, "state": "active"}, home.admin_token)
    assert answer.status_code == 403 and "device" in answer.json()["error"]
    answer = post({"release": 1, "state": "exploded"}, token)
    assert answer.status_code == 422 and "offered" in answer.json()["error"]
    assert post({"release": 1, "state": "failed", "reason": "test"}, token).status_code == 200
    assert home.device_states(1)["roles"]["reason"] == "test"


def test_bundles_are_served_with_http_range(home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built],
                                            keys: tuple) -> None:
    device = make_device("ranger")
    release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
    url = f"{home.url}/v1/tuf/targets/channels/{release.bundle_sha256}.stable.edgepkg"
    headers = {"authorization": f"Bearer {device.token_file.read_text()}"}
    whole = httpx.get(url, headers=headers, timeout=10)
    assert whole.status_code == 200 and whole.content == bundles["v2"].path.read_bytes()
    part = httpx.get(url, headers={**headers, "range": "bytes=1000-"}, timeout=10)
    assert part.status_code == 206 and part.content == whole.content[1000:]
