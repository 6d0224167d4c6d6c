"""Every bad request the collector must refuse, with the status and message it must give.

Shared by the bad-input tests and the OpenAPI test (which checks the spec lists exactly
the statuses observed here). Each case starts from a VALID batch with counters and breaks
one thing, so a collector that stored anything of it would show in the store.
"""

from __future__ import annotations

import gzip
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.collector import RunningCollector

from .batches import auth, batch, record

# Limits of the collector the cases run against: small, so over-limit bodies stay cheap.
LIMITS = {"max_body_bytes": 64 * 1024, "max_decompressed_bytes": 256 * 1024, "max_records": 10, "body_timeout": 1.5}
COUNTERS = {"dropped": 7, "sampled_out": 2, "dead_lettered": 1}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    message: str
    """A fragment the error message must contain (what was wrong / expected)."""
    send: Callable[[RunningCollector], Answer]


def _answer(response: httpx.Response) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(response.status_code, dict(response.headers), body)


def _valid() -> dict[str, Any]:
    return batch(3, counters=dict(COUNTERS))


def _raw(c: RunningCollector, data: bytes, headers: dict[str, str]) -> Answer:
    sent = {"Content-Type": "application/json", **auth(c.token), **headers}
    return _answer(httpx.post(f"{c.url}/v1/batches", content=data, headers=sent, timeout=30.0))


def _json(c: RunningCollector, document: Any, headers: dict[str, str] | None = None) -> Answer:
    return _raw(c, json.dumps(document).encode(), headers or {})


def _broken(mutate: Callable[[dict[str, Any]], None]) -> Callable[[RunningCollector], Answer]:
    def send(c: RunningCollector) -> Answer:
        document = _valid()
        mutate(document)
        return _json(c, document)

    return send


def _read_answer(sock: socket.socket) -> Answer:
    """Read one HTTP/1.1 answer with a Content-Length from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(int(lines[0].split()[1]), headers, json.loads(rest[:length]))


def open_upload(c: RunningCollector, token: str, declared: int, sent: bytes = b"") -> socket.socket:
    """A raw connection that sent the headers of a batch of ``declared`` bytes, then ``sent`` of it."""
    head = (
        f"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", c.port), timeout=20)
    sock.sendall(head + sent)
    return sock


def _declared_too_large(c: RunningCollector) -> Answer:
    # Headers only: if the collector waited for the body before refusing, this would hang
    # until the socket timeout instead of getting an answer.
    with open_upload(c, c.token, 50 * 1024 * 1024) as sock:
        return _read_answer(sock)


def _stalled_body(c: RunningCollector) -> Answer:
    # Half a valid body, then nothing: the body deadline (LIMITS["body_timeout"]) answers.
    data = json.dumps(_valid()).encode()
    with open_upload(c, c.token, len(data), data[: len(data) // 2]) as sock:
        return _read_answer(sock)


def _admin_upload(c: RunningCollector) -> Answer:
    admin = c.add_admin(f"ops-{uuid.uuid4().hex[:8]}")
    return _raw(c, json.dumps(_valid()).encode(), auth(admin))


def _one_device_too_many_uploads(c: RunningCollector) -> Answer:
    # A device of its own, so the uploads it holds open touch no other case.
    token = c.add_device(f"greedy-{uuid.uuid4().hex[:8]}")
    data = json.dumps(_valid()).encode()
    held = [open_upload(c, token, len(data), data[:10]) for _ in range(4)]
    try:
        # The four above must be in progress before the fifth arrives: let them get through
        # their headers (a GET on another connection is answered only after they were read).
        httpx.get(f"{c.url}/healthz", timeout=10)
        return _answer(httpx.post(f"{c.url}/v1/batches", content=data, headers={**auth(token), "Content-Type": "application/json"}, timeout=30))
    finally:
        for sock in held:
            sock.close()


def _streamed_too_large(c: RunningCollector) -> Answer:
    # A generator body goes out chunked, without Content-Length: only counting while
    # streaming can catch it.
    def chunks() -> Iterator[bytes]:
        yield b'{"batch_id": "big", "records": [], "pad": "'
        for _ in range(6):
            yield b"x" * 16 * 1024
        yield b'"}'

    sent = {"Content-Type": "application/json", **auth(c.token)}
    return _answer(httpx.post(f"{c.url}/v1/batches", content=chunks(), headers=sent, timeout=30.0))


def _gzip_bomb(c: RunningCollector) -> Answer:
    document = _valid()
    document["records"][0]["inputs"] = {"pad": "0" * (4 * 1024 * 1024)}
    data = gzip.compress(json.dumps(document).encode(), compresslevel=9)
    assert len(data) < LIMITS["max_body_bytes"], "the bomb must be small as sent"
    return _raw(c, data, {"Content-Encoding": "gzip"})


def _gzipped(transform: Callable[[bytes], bytes]) -> Callable[[RunningCollector], Answer]:
    def send(c: RunningCollector) -> Answer:
        data = transform(gzip.compress(json.dumps(_valid()).encode()))
        return _raw(c, data, {"Content-Encoding": "gzip"})

    return send


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return mutate


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    outer = inner
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return outer


def _literal(path: str, literal: str) -> Callable[[RunningCollector], Answer]:
    """Send a valid batch with the value at ``path`` spelled as ``literal`` in the JSON text
    (for what ``json.dumps`` cannot write, or would write differently)."""

    def send(c: RunningCollector) -> Answer:
        document = _valid()
        _set(path, "@@literal@@")(document)
        return _raw(c, json.dumps(document).encode().replace(b'"@@literal@@"', literal.encode()), {})

    return send


def _too_many(document: dict[str, Any]) -> None:
    document["records"] = [record() for _ in range(LIMITS["max_records"] + 1)]


CASES: list[Case] = [
    Case("no token", 401, "missing Authorization header", lambda c: _answer(
        httpx.post(f"{c.url}/v1/batches", json=_valid(), timeout=30.0))),
    Case("basic auth", 401, "not a bearer token", lambda c: _raw(
        c, json.dumps(_valid()).encode(), {"Authorization": "Basic ZGV2aWNlOnB3"})),
    Case("unknown token", 401, "not known", lambda c: _raw(
        c, json.dumps(_valid()).encode(), {"Authorization": "Bearer ept_" + uuid.uuid4().hex})),
    Case("brotli", 415, "Content-Encoding 'br'", lambda c: _raw(
        c, json.dumps(_valid()).encode(), {"Content-Encoding": "br"})),
    Case("stacked encodings", 415, "Content-Encoding 'gzip, gzip'", lambda c: _raw(
        c, gzip.compress(gzip.compress(json.dumps(_valid()).encode())), {"Content-Encoding": "gzip, gzip"})),
    Case("text body", 415, "Content-Type 'text/plain'", lambda c: _raw(
        c, json.dumps(_valid()).encode(), {"Content-Type": "text/plain"})),
    Case("admin token", 403, "holds an admin token, which reads the fleet but uploads nothing", _admin_upload),
    Case("body too slow", 408, "did not arrive within 1.5 s", _stalled_body),
    Case("five uploads at once from one device", 429, "already has 4 uploads in progress (at most 4 per device)",
         _one_device_too_many_uploads),
    Case("declared too large", 413, "at most 65536 bytes", _declared_too_large),
    Case("streamed too large", 413, "over 65536 bytes as sent", _streamed_too_large),
    Case("gzip bomb", 413, "decompresses to more than 262144 bytes", _gzip_bomb),
    Case("gzip header on plain JSON", 400, "not valid gzip", lambda c: _raw(
        c, json.dumps(_valid()).encode(), {"Content-Encoding": "gzip"})),
    Case("truncated gzip", 400, "truncated", _gzipped(lambda data: data[: len(data) // 2])),
    Case("data after gzip", 400, "after the end of the gzip stream", _gzipped(lambda data: data + b"garbage")),
    Case("second gzip member", 400, "single gzip member", _gzipped(lambda data: data + gzip.compress(b"{}"))),
    Case("corrupt deflate data", 400, "not valid gzip", _gzipped(
        lambda data: data[:10] + bytes(b ^ 0xFF for b in data[10:30]) + data[30:])),
    Case("malformed JSON", 400, "not valid JSON", lambda c: _raw(c, b'{"batch_id": "b", "records": [', {})),
    Case("not UTF-8", 400, "not UTF-8", lambda c: _raw(c, b'{"batch_id": "\xff\xfe", "records": []}', {})),
    Case("empty body", 400, "body is empty", lambda c: _raw(c, b"", {})),
    Case("JSON array", 422, "expected the body to be a JSON object", lambda c: _json(c, [_valid()])),
    Case("no records key", 422, "missing 'records'", _broken(_delete("records"))),
    Case("records not a list", 422, "records: expected an array", _broken(_set("records", {"0": record()}))),
    Case("too many records", 422, "at most 10 are accepted", _broken(_too_many)),
    Case("bad uuid", 422, "records[1].id: expected a UUID", _broken(_set("records.1.id", "not-a-uuid"))),
    Case("braced uuid", 422, "records[0].id", _broken(_set("records.0.id", "{" + str(uuid.uuid4()) + "}"))),
    Case("integer id", 422, "records[2].id", _broken(_set("records.2.id", 12345))),
    Case("missing outputs", 422, "records[0]: missing 'outputs'", _broken(_delete("records.0.outputs"))),
    Case("device in body", 422, "unknown key(s) 'device'", _broken(_set("records.0.device", "someone-else"))),
    Case("ts as text", 422, "records[0].ts", _broken(_set("records.0.ts", "2026-11-29T08:00:00Z"))),
    Case("ts boolean", 422, "records[0].ts", _broken(_set("records.0.ts", True))),
    Case("sha not hex", 422, "records[2].bundle_sha256", _broken(_set("records.2.bundle_sha256", "abc"))),
    Case("flags not strings", 422, "records[0].flags", _broken(_set("records.0.flags", ["ok", 3]))),
    Case("inputs not object", 422, "records[1].inputs", _broken(_set("records.1.inputs", [31.5, "north"]))),
    Case("empty model", 422, "records[0].model", _broken(_set("records.0.model", " "))),
    Case("version number", 422, "records[0].version", _broken(_set("records.0.version", 3))),
    Case("empty batch id", 422, "batch_id", _broken(_set("batch_id", ""))),
    Case("negative counter", 422, "counters.dropped", _broken(_set("counters.dropped", -1))),
    Case("counter missing", 422, "counters: missing 'dead_lettered'", _broken(_delete("counters.dead_lettered"))),
    Case("counter name not snake_case", 422, "counter name 'Lost Records' is not allowed", _broken(_set("counters.Lost Records", 1))),
    Case("counter name too long", 422, "is not allowed; expected snake_case", _broken(_set("counters." + "x" * 65, 1))),
    Case("too many counters", 422, "33 counters; at most 32", _broken(
        lambda d: d["counters"].update({f"extra_{i}": i for i in range(30)}))),
    Case("extra counter negative", 422, "counters.lost: expected a non-negative integer", _broken(_set("counters.lost", -2))),
    Case("counter float", 422, "counters.sampled_out", _broken(_set("counters.sampled_out", 1.5))),
    Case("unknown top-level key", 422, "unknown key(s) 'device_id'", _broken(_set("device_id", "someone-else"))),
    Case("NaN timestamp", 422, "finite number", lambda c: _raw(
        c, json.dumps(_valid()).encode().replace(b'"ts": 1790000000.25', b'"ts": NaN', 1), {})),
    # Values Python's json reads but strict JSON (and so the store) cannot carry exactly.
    Case("integer beyond 64 bits", 422, "records[1].inputs.count: expected an integer from -9223372036854775808 to "
         "18446744073709551615, got 18446744073709551616", _broken(_set("records.1.inputs", {"count": 2**64}))),
    Case("negative integer beyond 64 bits", 422, "records[0].outputs.probabilities.1: expected an integer from",
         _broken(_set("records.0.outputs.probabilities.1", -(2**63) - 1))),
    Case("NaN input", 422, "records[2].inputs.temp_c: expected a finite number, got NaN",
         _literal("records.2.inputs.temp_c", "NaN")),
    Case("Infinity output", 422, "records[0].outputs.prediction: expected a finite number, got -Infinity",
         _literal("records.0.outputs.prediction", "-Infinity")),
    Case("number beyond a double", 422, "records[1].inputs.temp_c: expected a finite number, got Infinity",
         _literal("records.1.inputs.temp_c", "1e400")),
    # orjson reads these as 0.0 without a word: a non-zero value below the smallest double.
    Case("number below a double", 422, "records[2].inputs.temp_c: expected a number a double can hold, got 1e-400",
         _literal("records.2.inputs.temp_c", "1e-400")),
    Case("number below a double, upper-case E", 422, "records[0].outputs.probabilities.0: expected a number a double "
         "can hold, got -7.5E-330", _literal("records.0.outputs.probabilities.0", "-7.5E-330")),
    Case("number below a double as a long fraction", 422, "records[1].outputs.prediction: expected a number a double can hold",
         _literal("records.1.outputs.prediction", "0." + "0" * 400 + "3")),
    Case("timestamp below a double", 422, "records[0].ts: expected a number a double can hold",
         _literal("records.0.ts", "2e-999")),
    Case("number below a double in a body orjson refuses", 422, "records[0].inputs.temp_c: expected a number a double",
         lambda c: _raw(c, b"\xef\xbb\xbf" + json.dumps(_valid()).encode().replace(b'"temp_c": 31.5', b'"temp_c": 1e-400', 1), {})),
    Case("unpaired surrogate in inputs", 422, "records[0].inputs.region: expected valid Unicode text",
         _broken(_set("records.0.inputs.region", "north\ud800"))),
    Case("unpaired surrogate in model", 422, "records[1].model: expected valid Unicode text",
         _broken(_set("records.1.model", "fire\udfff"))),
    Case("inputs nested too deep", 422, "records[2].inputs: cannot be stored as canonical JSON",
         _broken(_set("records.2.inputs", _nested(300)))),
    Case("counter beyond 64 bits", 422, "counters.dropped: expected a non-negative integer of at most 9223372036854775807",
         _broken(_set("counters.dropped", 2**63))),
]

