"""A scripted collector behind ``httpx.MockTransport``, for the answers a real one cannot
be made to give on demand (503 with Retry-After, 429, 413, timeouts, a token refusal).

It decodes each request as the real collector would, stores record ids like it (unique
per id), and answers from a script: a list of ``Response``/exception/callable entries used
in order, then 200 for everything else.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

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
        data = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
        body = json.loads(data)
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


def error(status: int, message: str = "no", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message}, headers=headers)
