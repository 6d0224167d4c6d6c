"""Memory: many small gzip bodies that inflate to valid full-size batches, sent at once.

Each body is ~30 KB as sent and a valid 30 MiB batch once inflated: under the per-request
cap, so only a bound on the bytes held by all requests together can keep the collector's
memory in check. Peak memory is read from the collector child's /proc status (VmHWM).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.collector import RunningCollector

from .batches import batch

MIB = 1 << 20
SENDERS = 16
BATCH_MIB = 30


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _inflating_batch() -> tuple[dict, bytes]:
    """A valid one-record batch of ``BATCH_MIB`` MiB as JSON, and its gzip (~30 KB)."""
    document = batch(1)
    document["records"][0]["inputs"] = {"pad": "0" * (BATCH_MIB * MIB - 1024)}
    return document, gzip.compress(json.dumps(document).encode(), compresslevel=9)


def _post(url: str, token: str, data: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    return httpx.post(f"{url}/v1/batches", content=data, headers=headers, timeout=120.0)


def _flood(collector: RunningCollector, tokens: list[str]) -> tuple[list[httpx.Response], list[bytes], float]:
    """Send one inflating batch per token, all at once; the answers, the bodies and the peak growth (MiB)."""
    assert collector.process is not None
    bodies = [_inflating_batch()[1] for _ in tokens]
    assert all(len(data) < 64 * 1024 for data in bodies), "small as sent"
    before = _peak_rss_mib(collector.process.pid)
    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        answers = list(pool.map(lambda job: _post(collector.url, *job), zip(tokens, bodies)))
    return answers, bodies, _peak_rss_mib(collector.process.pid) - before


def _stored(collector: RunningCollector) -> int:
    with sqlite3.connect(f"file:{collector.db_path}?mode=ro", uri=True) as connection:
        count = connection.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    connection.close()
    return count


def _refused_are_taken_later(collector: RunningCollector, tokens: list[str], bodies: list[bytes], answers: list[httpx.Response]) -> None:
    # A refused batch is taken when sent again, as a device's sync would after Retry-After
    # (two of them: each full-size batch costs the store 30 MiB of writes).
    accepted = sum(answer.status_code == 200 for answer in answers)
    refused = [(token, body) for token, body, answer in zip(tokens, bodies, answers) if answer.status_code != 200]
    for token, body in refused[:2]:
        again = _post(collector.url, token, body)
        assert again.json() == {"accepted": 1, "duplicates": 0}, again.text
    assert _stored(collector) == accepted + len(refused[:2])


def _check_answers(answers: list[httpx.Response]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for answer in answers:
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code == 200:
            assert answer.json() == {"accepted": 1, "duplicates": 0}
        else:
            assert answer.status_code in (429, 503), answer.text
            assert answer.headers["Retry-After"] == "5" and "nothing was stored" in answer.json()["error"]
    assert statuses.get(200, 0) >= 1, statuses
    return statuses


def test_inflating_bodies_from_many_devices_keep_memory_bounded(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory()
    tokens = [collector.add_device(f"inflate-{i}") for i in range(SENDERS)]

    answers, bodies, growth = _flood(collector, tokens)

    statuses = _check_answers(answers)
    print(f"{SENDERS} x {BATCH_MIB} MiB from {SENDERS} devices: statuses {statuses}, peak RSS growth {growth:.0f} MiB")
    # Unbounded, 16 such bodies took the collector from 50 MB to 1.35 GB. The default pool
    # is 64 MiB of bodies (two full batches); each byte held costs a few more while it is
    # parsed, encoded and stored.
    assert growth < 400, f"peak memory grew by {growth:.0f} MiB ({statuses})"
    _refused_are_taken_later(collector, tokens, bodies, answers)


def test_inflating_bodies_from_one_device_keep_memory_bounded(collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory()
    tokens = [collector.token] * SENDERS

    answers, bodies, growth = _flood(collector, tokens)

    statuses = _check_answers(answers)
    print(f"{SENDERS} x {BATCH_MIB} MiB from one device: statuses {statuses}, peak RSS growth {growth:.0f} MiB")
    assert growth < 250, f"peak memory grew by {growth:.0f} MiB ({statuses})"
    # One device may hold one full-size batch (max_decompressed_bytes) at a time.
    assert statuses.get(429, 0) >= SENDERS - 2, statuses
    _refused_are_taken_later(collector, tokens, bodies, answers)


def _zstd_of_zeros(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes without a declared size, compressed as it streams."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    piece = bytes(1 << 20)
    parts = [compressor.compress(piece) for _ in range(size >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_a_zstd_bomb_without_a_declared_size_is_refused_with_bounded_memory(collector_factory: Callable[..., RunningCollector]) -> None:
    # 1 GiB of zeros in a few tens of KB, no content size in the frame header: only the
    # cap checked while decompressing (slice by slice) stops it.
    collector = collector_factory()
    bomb = _zstd_of_zeros(1 << 30)
    assert len(bomb) < 256 * 1024, len(bomb)
    assert collector.process is not None
    before = _peak_rss_mib(collector.process.pid)
    headers = {"Authorization": f"Bearer {collector.token}", "Content-Type": "application/vnd.edgepack.batch.v1+msgpack",
               "Content-Encoding": "zstd"}
    answer = httpx.post(f"{collector.url}/v1/batches", content=bomb, headers=headers, timeout=120.0)
    growth = _peak_rss_mib(collector.process.pid) - before
    assert answer.status_code == 413 and "decompresses to more than 33554432 bytes" in answer.json()["error"], answer.text
    # The cap is 32 MiB: at most that, plus one feed's worth, is ever held.
    assert growth < 120, f"peak memory grew by {growth:.0f} MiB"
    assert _stored(collector) == 0
