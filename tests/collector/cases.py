"""Every bad request the collector must refuse, with the status and message it must give.

Shared by the bad-input tests and the OpenAPI test (which checks the spec lists exactly
the statuses observed here). Each case starts from a VALID batch with counters and breaks
one thing, so a collector that stored anything of it would show in the store.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.collector import RunningCollector

from .batches import PACKED, auth, batch, packed, record

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



# The MessagePack batch (home/packed.py): the same refusals, with the place at fault named
# by its path in the packed layout.


def _packed_raw(c: RunningCollector, data: bytes, headers: dict[str, str] | None = None) -> Answer:
    sent = {"Content-Type": PACKED, **auth(c.token), **(headers or {})}
    return _answer(httpx.post(f"{c.url}/v1/batches", content=data, headers=sent, timeout=30.0))


def _packed_broken(mutate: Callable[[dict[str, Any]], None]) -> Callable[[RunningCollector], Answer]:
    def send(c: RunningCollector) -> Answer:
        import msgspec

        document = packed(_valid())
        mutate(document)
        return _packed_raw(c, msgspec.msgpack.encode(document))

    return send


def _packed_bytes(make: Callable[[bytes], bytes], encoding: str | None = None) -> Callable[[RunningCollector], Answer]:
    def send(c: RunningCollector) -> Answer:
        import msgspec

        data = make(msgspec.msgpack.encode(packed(_valid())))
        return _packed_raw(c, data, {"Content-Encoding": encoding} if encoding else {})

    return send


def _zstd(data: bytes, **options: Any) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(**options).compress(data)


def _zstd_bomb(c: RunningCollector) -> Answer:
    import msgspec

    document = packed(_valid())
    document["groups"][0]["records"][0][0][0] = "0" * (4 * 1024 * 1024)
    data = _zstd(msgspec.msgpack.encode(document), level=19, write_content_size=False)
    assert len(data) < LIMITS["max_body_bytes"], "the bomb must be small as sent"
    return _packed_raw(c, data, {"Content-Encoding": "zstd"})


def _zstd_declared_bomb(c: RunningCollector) -> Answer:
    # A frame header that declares 4 GiB of content: refused before any decompression.
    import msgspec

    data = _zstd(msgspec.msgpack.encode(packed(_valid())))
    import zstandard

    params = zstandard.get_frame_parameters(data)
    assert params.content_size > 0
    # Frame header: magic, descriptor (FCS flag 3: 8 bytes of content size), [window], size.
    descriptor = data[4]
    assert descriptor >> 6 in (0, 1, 2, 3)
    header = b"\x28\xb5\x2f\xfd" + bytes([0b11100000]) + (4 << 30).to_bytes(8, "little")
    return _packed_raw(c, header + b"\x00" * 16, {"Content-Encoding": "zstd"})


def _zstd_huge_window(c: RunningCollector) -> Answer:
    # A frame asking for a 1 GiB window (no content size): a decoder without a window
    # limit would allocate it.
    import msgspec

    data = _zstd(msgspec.msgpack.encode(packed(_valid())), write_content_size=False)
    # Descriptor 0x00 (no content size, window descriptor present), window byte: exponent 30-10.
    header = b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([(30 - 10) << 3])
    assert data[:4] == header[:4]
    return _packed_raw(c, header + data[6:], {"Content-Encoding": "zstd"})


def _lying_count(document: dict[str, Any]) -> None:
    # ids and ts say 3 records, the records array holds 2.
    document["groups"][0]["records"].pop()


def _declared_huge_array(data: bytes) -> bytes:
    # A group whose records array declares 2**32-1 items in a few bytes.
    import msgspec

    document = packed(_valid())
    document["groups"][0]["records"] = msgspec.Raw(b"\xdd\xff\xff\xff\xff\x93\x90\x80\x90")
    return msgspec.msgpack.encode(document)


def _packed_too_many(document: dict[str, Any]) -> None:
    many = packed(batch(LIMITS["max_records"] + 1))
    document["groups"] = many["groups"]


def _ext_value(document: dict[str, Any]) -> None:
    import msgspec

    document["groups"][0]["records"][1][0][0] = msgspec.msgpack.Ext(5, b"\x01\x02")


CASES += [
    Case("packed: wrong content type version", 415, "Content-Type 'application/vnd.edgepack.batch.v2+msgpack'",
         lambda c: _packed_raw(c, b"\x80", {"Content-Type": "application/vnd.edgepack.batch.v2+msgpack"})),
    Case("packed: empty body", 400, "body is empty; expected a MessagePack batch", lambda c: _packed_raw(c, b"")),
    Case("packed: JSON sent as MessagePack", 400, "not valid MessagePack",
         lambda c: _packed_raw(c, json.dumps(_valid()).encode())),
    Case("packed: truncated", 400, "not valid MessagePack", _packed_bytes(lambda data: data[: len(data) // 2])),
    Case("packed: trailing bytes", 400, "not valid MessagePack", _packed_bytes(lambda data: data + b"\xc0")),
    Case("packed: array declaring 2**32-1 records", 400, "not valid MessagePack", _packed_bytes(_declared_huge_array)),
    Case("packed: not a map", 422, "Expected `object`, got `array`", lambda c: _packed_raw(c, b"\x90")),
    Case("packed: unknown key", 422, "Object contains unknown field `device`", _packed_broken(_set("device", "someone"))),
    Case("packed: missing groups", 422, "missing required field `groups`", _packed_broken(_delete("groups"))),
    Case("packed: group field of the wrong type", 422, "Expected `str`, got `int` - at `$.groups[0].ids`",
         _packed_broken(_set("groups.0.ids", 7))),
    Case("packed: ids not whole UUIDs", 422, "groups[0].ids: holds 107 characters, expected 36 per record",
         _packed_broken(lambda d: d["groups"][0].update(ids=d["groups"][0]["ids"][:-1]))),
    Case("packed: bad uuid", 422, "groups[0].ids[1]: expected a UUID",
         _packed_broken(lambda d: d["groups"][0].update(ids=d["groups"][0]["ids"][:36] + "x" * 36 + d["groups"][0]["ids"][72:]))),
    Case("packed: timestamps short", 422, "groups[0].ts: holds 16 bytes for 3 ids, expected 8 per record",
         _packed_broken(lambda d: d["groups"][0].update(ts=d["groups"][0]["ts"][:16]))),
    Case("packed: record count that lies", 422, "groups[0].records: holds 2 records, but ids and ts hold 3",
         _packed_broken(_lying_count)),
    Case("packed: too many records", 422, "groups: batch has 11 records; at most 10 are accepted", _packed_broken(_packed_too_many)),
    Case("packed: NaN timestamp", 422, "groups[0].ts[0]: expected unix seconds UTC as a finite number",
         _packed_broken(lambda d: d["groups"][0].update(ts=struct.pack("<3d", math.nan, 1.0, 2.0)))),
    Case("packed: values for other names", 422, "groups[0].records[2][0]: holds 3 input values for the group's 2 input names",
         _packed_broken(lambda d: d["groups"][0]["records"][2][0].append(1.0))),
    Case("packed: record not a triple", 422, "Expected `array` of length 3, got 2 - at `$[1]`",
         _packed_broken(lambda d: d["groups"][0]["records"][1].pop())),
    Case("packed: flags not strings", 422, "Expected `str`, got `int` - at `$[0][2][0]`",
         _packed_broken(lambda d: d["groups"][0]["records"][0].__setitem__(2, [3]))),
    Case("packed: extension type value", 422, "groups[0].records[1][0]: holds a MessagePack extension value (type 5)",
         _packed_broken(_ext_value)),
    Case("packed: sha not hex", 422, "groups[0].bundle_sha256", _packed_broken(_set("groups.0.bundle_sha256", "abc"))),
    Case("packed: empty model", 422, "groups[0].model", _packed_broken(_set("groups.0.model", ""))),
    Case("packed: negative counter", 422, "counters.dropped", _packed_broken(_set("counters.dropped", -1))),
    Case("packed: empty batch id", 422, "batch_id", _packed_broken(_set("batch_id", ""))),
    Case("packed: a body of empty maps (64 bytes each once decoded)", 422, "groups: records hold over",
         _packed_broken(lambda d: d["groups"][0]["records"][0].__setitem__(0, [{}] * 50_000))),
    Case("packed: an empty group", 422, "groups[1].ids: holds no records",
         _packed_broken(lambda d: d["groups"].append(dict(d["groups"][0], ids="", ts=b"", records=[])))),
    Case("packed: more groups than records allowed", 422, "batch has 11 groups",
         _packed_broken(lambda d: d["groups"].extend([dict(d["groups"][0], ids="", ts=b"", records=[])] * 10))),
    Case("zstd bomb", 413, "decompresses to more than 262144 bytes", _zstd_bomb),
    Case("zstd frame declaring 4 GiB", 413, "declares 4294967296 bytes of content", _zstd_declared_bomb),
    Case("zstd frame asking for a 1 GiB window", 400, "window of at most 8388608 bytes", _zstd_huge_window),
    Case("data after zstd", 400, "after the end of the zstd frame", _packed_bytes(lambda data: _zstd(data) + b"garbage", "zstd")),
    Case("second zstd frame", 400, "single zstd frame", _packed_bytes(lambda data: _zstd(data) + _zstd(b"\x80"), "zstd")),
    Case("zstd header on plain MessagePack", 400, "not valid zstd", _packed_bytes(lambda data: data, "zstd")),
    Case("truncated zstd", 400, "truncated", _packed_bytes(lambda data: _zstd(data)[: len(_zstd(data)) // 2], "zstd")),
    Case("zstd truncated by its last bytes", 400, "truncated", _packed_bytes(lambda data: _zstd(data)[:-3], "zstd")),
]
