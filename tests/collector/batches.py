"""Building batches and requests for the collector tests."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from typing import Any

import httpx

SHA = hashlib.sha256(b"fire-risk bundle").hexdigest()


def record(**overrides: Any) -> dict[str, Any]:
    """A valid record with a fresh id; ``overrides`` replace fields."""
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "ts": 1_790_000_000.25,
        "model": "fire-risk",
        "version": "3",
        "bundle_sha256": SHA,
        "inputs": {"temp_c": 31.5, "region": "north"},
        "outputs": {"prediction": 1, "probabilities": {"0": 0.2, "1": 0.8}},
        "flags": [],
    }
    body.update(overrides)
    return body


def batch(n: int = 3, *, counters: dict[str, int] | None = None, **record_overrides: Any) -> dict[str, Any]:
    """A valid batch of ``n`` fresh records."""
    body: dict[str, Any] = {"batch_id": str(uuid.uuid4()), "records": [record(**record_overrides) for _ in range(n)]}
    if counters is not None:
        body["counters"] = counters
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(
    url: str, token: str | None, body: Any, *, gzipped: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST a batch the way the sync service does (JSON, optionally gzip)."""
    data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(auth(token) if token else {})}
    if gzipped:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    return httpx.post(f"{url}/v1/batches", content=data, headers=sent, timeout=30.0)


PACKED = "application/vnd.edgepack.batch.v1+msgpack"


def packed(document: dict[str, Any], *, group_size: int | None = None) -> dict[str, Any]:
    """The MessagePack batch (as a Python object, before encoding) of a JSON batch's records:
    consecutive records of one context (model, version, bundle, input names) form a group,
    at most ``group_size`` each."""
    import struct

    groups: list[dict[str, Any]] = []
    for item in document["records"]:
        names = list(item["inputs"])
        key = (item["model"], item["version"], item["bundle_sha256"], names)
        last = groups[-1] if groups else None
        if last is None or last["_key"] != key or (group_size and len(last["records"]) >= group_size):
            last = {"_key": key, "model": item["model"], "version": item["version"],
                    "bundle_sha256": item["bundle_sha256"], "inputs": names, "ids": "", "_ts": [], "records": []}
            groups.append(last)
        last["ids"] += item["id"]
        last["_ts"].append(item["ts"])
        last["records"].append([list(item["inputs"].values()), item["outputs"], item["flags"]])
    for group in groups:
        del group["_key"]
        group["ts"] = struct.pack(f"<{len(group['_ts'])}d", *group.pop("_ts"))
    body: dict[str, Any] = {"batch_id": document["batch_id"], "groups": groups}
    if "counters" in document:
        body["counters"] = document["counters"]
    return body


def post_packed(
    url: str, token: str | None, body: Any, *, encoding: str | None = "zstd", headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    """POST a MessagePack batch (``body`` as built by ``packed``, or ``raw`` bytes) the way
    the sync service does: zstd (or ``gzip``, or none)."""
    import msgspec

    data = raw if raw is not None else msgspec.msgpack.encode(body)
    sent = {"Content-Type": PACKED, **(auth(token) if token else {})}
    if encoding == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor(level=1).compress(data)
        sent["Content-Encoding"] = "zstd"
    elif encoding == "gzip":
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    sent.update(headers or {})
    return httpx.post(f"{url}/v1/batches", content=data, headers=sent, timeout=30.0)
