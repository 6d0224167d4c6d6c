"""A scripted collector behind ``httpx.MockTransport``, for the answers a real one cannot
be made to give on demand (503 with Retry-After, 429, 413, timeouts, a token refusal).

It decodes each request as the real collector would (gzip or zstd, JSON or the
MessagePack batch, the latter turned into the JSON body's shape: ``body["records"]`` is
a list of record objects either way), stores record ids like it (unique per id), and
answers from a script: a list of ``Response``/exception/callable entries used
in order, then 200 for everything else.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from telemetry.wire import PACKED_MEDIA_TYPE

Step = httpx.Response | Exception | Callable[[dict[str, Any]], httpx.Response | None]


@dataclass
class Sent:
    headers: httpx.Headers
    body: dict[str, Any]
    raw_size: int


@dataclass
class FakeCollector:
    script: list[Step] = field(default_factory=list)
    rule: Callable[[dict[str, Any]], httpx.Response | None] | None = None
    requests: list[Sent] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)

    def handler(self, request: httpx.Request) -> httpx.Response:
        raw = request.read()
        encoding = request.headers.get("Content-Encoding")
        if encoding == "gzip":
            data = gzip.decompress(raw)
        elif encoding == "zstd":
            import zstandard

            data = zstandard.ZstdDecompressor().stream_reader(raw).read()
        else:
            data = raw
        packed = request.headers.get("Content-Type") == PACKED_MEDIA_TYPE
        body = unpacked(data) if packed else json.loads(data)
        self.requests.append(Sent(request.headers, body, len(raw)))
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            answer = step(body) if callable(step) else step
            if answer is not None:
                return answer
        if self.rule is not None:
            answer = self.rule(body)
            if answer is not None:
                return answer
        accepted = duplicates = 0
        for record in body["records"]:
            if record["id"] in self.stored:
                duplicates += 1
            else:
                self.stored[record["id"]] = record
                accepted += 1
        return httpx.Response(200, json={"accepted": accepted, "duplicates": duplicates})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def seqs(self) -> list[int]:
        return sorted(record["inputs"]["seq"] for record in self.stored.values())


def unpacked(data: bytes) -> dict[str, Any]:
    """A MessagePack batch in the shape of the JSON batch of the same records."""
    batch = msgspec.msgpack.decode(data)
    records = []
    for group in batch["groups"]:
        ids = group["ids"]
        count = len(ids) // 36
        stamps = struct.unpack(f"<{count}d", group["ts"])
        for i, (values, outputs, flags) in enumerate(group["records"]):
            records.append({
                "id": ids[36 * i : 36 * i + 36], "ts": stamps[i], "model": group["model"], "version": group["version"],
                "bundle_sha256": group["bundle_sha256"], "inputs": dict(zip(group["inputs"], values)),
                "outputs": outputs, "flags": flags,
            })
    return {"batch_id": batch["batch_id"], "records": records, **({"counters": batch["counters"]} if "counters" in batch else {})}


def error(status: int, message: str = "no", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message}, headers=headers)
