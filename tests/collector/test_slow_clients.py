"""Slow clients: one token's slow uploads cannot starve other devices, and no slow
connection, authenticated or not, is kept open past its deadline.

Real sockets on loopback against a real collector, with short deadlines so every test
is bounded in time: each slow client sends one byte a second.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from home.connections import LINGER_SECONDS
from tests.support.collector import RunningCollector

from .batches import batch, post

SLOW = 50
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0


@dataclass
class Slow:
    """A connection that sends ``first`` at once, then one byte of ``rest`` a second."""

    sock: socket.socket
    rest: bytes
    received: bytes = b""
    closed_after: float | None = None
    sent: int = 0

    @property
    def status(self) -> int | None:
        head = self.received.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else None


@dataclass
class SlowClients:
    clients: list[Slow] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def open(self) -> list[Slow]:
        return [client for client in self.clients if client.closed_after is None]


def _drive(clients: SlowClients, stop: threading.Event) -> None:
    """One byte a second to every open client; note answers and when the collector closed each."""
    next_byte = time.monotonic()
    while not stop.is_set() and clients.open():
        now = time.monotonic()
        if now >= next_byte:
            for client in clients.open():
                if client.sent < len(client.rest):
                    try:
                        client.sock.send(client.rest[client.sent : client.sent + 1])
                        client.sent += 1
                    except OSError:
                        client.closed_after = time.monotonic() - clients.started
            next_byte = now + 1.0
        readable, _, _ = select.select([c.sock for c in clients.open()], [], [], 0.05)
        for sock in readable:
            client = next(c for c in clients.clients if c.sock is sock)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                client.received += data
            else:
                client.closed_after = time.monotonic() - clients.started


@contextmanager
def _slow_clients(port: int, requests: list[tuple[bytes, bytes]]) -> Iterator[SlowClients]:
    """Open one connection per (sent at once, then one byte a second) pair; close all on exit."""
    clients = SlowClients()
    for first, rest in requests:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first:
            sock.sendall(first)
        clients.clients.append(Slow(sock=sock, rest=rest))
    stop = threading.Event()
    driver = threading.Thread(target=_drive, args=(clients, stop), daemon=True)
    driver.start()
    try:
        yield clients
    finally:
        stop.set()
        driver.join(timeout=10)
        for client in clients.clients:
            client.sock.close()


def _wait_all_closed(clients: SlowClients, within: float) -> float:
    deadline = clients.started + within
    while clients.open() and time.monotonic() < deadline:
        time.sleep(0.1)
    still_open = len(clients.open())
    assert still_open == 0, f"{still_open} slow connections still open after {within:g} s"
    return max(client.closed_after or 0.0 for client in clients.clients)


def _upload_head(port: int, token: str, length: int) -> bytes:
    return (
        f"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _served_meanwhile(collector: RunningCollector, token: str, clients: SlowClients, seconds: float) -> list[int]:
    """Another device uploading normally, one batch after another, while the slow ones last."""
    statuses = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        statuses.append(post(collector.url, token, batch(5)).status_code)
        time.sleep(0.1)
    return statuses


def _slow_collector(factory: Callable[..., RunningCollector]) -> RunningCollector:
    return factory(header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT)


def test_slow_uploads_from_one_token_do_not_starve_other_devices(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = _slow_collector(collector_factory)
    greedy = collector.add_device("greedy")
    other = collector.add_device("other")
    body = b'{"batch_id": "slow", "records": []}' + b" " * 100_000
    requests = [(_upload_head(collector.port, greedy, len(body)), body) for _ in range(SLOW)]

    with _slow_clients(collector.port, requests) as clients:
        statuses = _served_meanwhile(collector, other, clients, BODY_TIMEOUT + 2)
        last_closed = _wait_all_closed(clients, within=BODY_TIMEOUT + LINGER_SECONDS + 5)
        answers = sorted(client.status or 0 for client in clients.clients)

    print(f"{SLOW} slow uploads on one token: other device got {len(statuses)} x {set(statuses)}; "
          f"slow ones answered {dict((s, answers.count(s)) for s in set(answers))}, last closed after {last_closed:.1f} s")
    assert statuses and set(statuses) == {200}, statuses
    # Four (the per-device limit) were let in and cut off by the body deadline; every other
    # one was told at once that its device already had four in progress.
    assert answers == [408] * 4 + [429] * (SLOW - 4), answers
    assert last_closed < BODY_TIMEOUT + LINGER_SECONDS + 3
    assert collector.records("greedy") == [] and len(collector.records("other")) == 5 * len(statuses)
    assert "did not arrive within 3 s" in collector.log()


def test_slow_headers_are_cut_off_and_other_devices_served(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = _slow_collector(collector_factory)
    other = collector.add_device("other")
    # Unauthenticated: nothing but a request line and headers, one byte a second, never finished.
    requests = [(b"", b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200) for _ in range(SLOW)]

    with _slow_clients(collector.port, requests) as clients:
        statuses = _served_meanwhile(collector, other, clients, HEADER_TIMEOUT + 1)
        last_closed = _wait_all_closed(clients, within=HEADER_TIMEOUT + 5)

    print(f"{SLOW} slow-header connections: other device got {len(statuses)} x {set(statuses)}, last closed after {last_closed:.1f} s")
    assert statuses and set(statuses) == {200}, statuses
    assert all(client.received == b"" for client in clients.clients), "closed without an answer"
    assert HEADER_TIMEOUT - 0.5 < last_closed < HEADER_TIMEOUT + 3
    assert "no complete request headers within 2 s" in collector.log()


def test_idle_connections_beyond_the_cap_are_closed_at_once(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(header_timeout=HEADER_TIMEOUT, max_header_connections=8)
    requests = [(b"", b"") for _ in range(20)]

    with _slow_clients(collector.port, requests) as clients:
        last_closed = _wait_all_closed(clients, within=HEADER_TIMEOUT + 5)

    # Connections that sent nothing: eight may wait for their headers (and are cut off at the
    # header deadline), the other twelve are closed at once.
    closed = sorted(client.closed_after or 0.0 for client in clients.clients)
    assert all(after < HEADER_TIMEOUT / 2 for after in closed[:12]), closed
    assert all(after > HEADER_TIMEOUT - 0.5 for after in closed[12:]), closed
    assert last_closed < HEADER_TIMEOUT + 3
    assert "are already waiting for their request headers (at most 8)" in collector.log()
    # Once they are gone the collector takes new connections again.
    assert post(collector.url, collector.token, batch(2)).json() == {"accepted": 2, "duplicates": 0}


def test_a_body_trickling_on_after_the_answer_is_cut_off(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = _slow_collector(collector_factory)
    # Refused at once (unknown token), but the client goes on sending its body a byte a second:
    # after the answer the rest is discarded for a few seconds at most, then the connection closes.
    body = b" " * 100_000
    requests = [(_upload_head(collector.port, "ept_unknown", len(body)), body) for _ in range(5)]

    with _slow_clients(collector.port, requests) as clients:
        last_closed = _wait_all_closed(clients, within=LINGER_SECONDS + 5)

    assert [client.status for client in clients.clients] == [401] * 5
    assert LINGER_SECONDS - 0.5 < last_closed < LINGER_SECONDS + 3


def test_a_slow_second_request_on_a_kept_alive_connection_is_cut_off(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = _slow_collector(collector_factory)
    # One good request, answered, then the next request's headers a byte a second.
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    requests = [(first, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100)]

    with _slow_clients(collector.port, requests) as clients:
        last_closed = _wait_all_closed(clients, within=HEADER_TIMEOUT + 5)

    (client,) = clients.clients
    assert client.status == 200 and client.received.count(b"HTTP/1.1 ") == 1
    assert last_closed < HEADER_TIMEOUT + 3
    assert httpx.get(f"{collector.url}/healthz").status_code == 200


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole HTTP/1.1 response from ``sock`` (its status and body, by Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the collector closed the connection instead of answering (got {received!r})"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the collector closed the connection mid-answer (got {received + body!r})"
        body += chunk
    assert len(body) == length, "more bytes than the answer holds"
    return int(head.split()[1]), body


def test_a_connection_reused_after_an_early_answer_serves_the_next_request_in_full(
    collector_factory: Callable[..., RunningCollector],
) -> None:
    collector = collector_factory()  # default deadlines: the body may take its time
    sock = socket.create_connection(("127.0.0.1", collector.port), timeout=30)
    try:
        # Answered 401 before its body was read; the client then sends that body after all...
        junk = b" " * 100
        sock.sendall(_upload_head(collector.port, "ept_unknown", len(junk)))
        assert _response(sock)[0] == 401
        answered = time.monotonic()
        sock.sendall(junk)
        # ...and reuses the connection, as a retry does, for a request still going when the
        # deadline for discarding the first body would have passed.
        body = json.dumps(batch(3)).encode()
        sock.sendall(_upload_head(collector.port, collector.token, len(body)) + body[:10])
        time.sleep(LINGER_SECONDS + 1.5 - (time.monotonic() - answered))
        sock.sendall(body[10:])
        status, answer = _response(sock)
    finally:
        sock.close()
    assert (status, json.loads(answer)) == (200, {"accepted": 3, "duplicates": 0})
    assert len(collector.records()) == 3
