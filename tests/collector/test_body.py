"""The streaming body reader: exact round trips under the caps, refusals over them."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from home.body import read_body
from home.errors import MalformedBody, PayloadTooLarge
from home.settings import CollectorSettings

CAP = 64 * 1024
LIMITS = CollectorSettings(db_path=Path("unused.db"), tokens_path=Path("unused.json"), max_body_bytes=CAP, max_decompressed_bytes=CAP)

# Payloads mixing incompressible bytes and long runs, so compressed sizes and the points
# where zlib's output fills up vary widely.
payloads = st.lists(
    st.one_of(st.binary(max_size=300), st.integers(0, 40_000).map(lambda n: b"0" * n)), max_size=6
).map(b"".join)


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _read(data: bytes, size: int, encoding: str = "gzip") -> bytes:
    return asyncio.run(read_body(_chunks(data, size), encoding, LIMITS))


@settings(max_examples=60, deadline=None)
@given(payload=payloads, level=st.sampled_from([1, 6, 9]), size=st.integers(1, 5000))
def test_gzip_bodies_under_the_cap_round_trip_whatever_the_chunking(payload: bytes, level: int, size: int) -> None:
    data = gzip.compress(payload, compresslevel=level)
    if len(payload) <= CAP:
        assert _read(data, size) == payload
    else:
        with pytest.raises(PayloadTooLarge, match=f"more than {CAP} bytes"):
            _read(data, size)


@settings(max_examples=40, deadline=None)
@given(payload=payloads.filter(lambda p: 0 < len(p) <= CAP), cut=st.floats(0.0, 0.99), size=st.integers(1, 5000))
def test_truncated_gzip_is_malformed(payload: bytes, cut: float, size: int) -> None:
    data = gzip.compress(payload)
    with pytest.raises(MalformedBody):
        _read(data[: int(len(data) * cut)], size)


def test_exactly_the_cap_is_accepted_one_more_byte_is_not() -> None:
    assert _read(gzip.compress(b"1" * CAP), 1000) == b"1" * CAP
    with pytest.raises(PayloadTooLarge):
        _read(gzip.compress(b"1" * (CAP + 1)), 1000)


def test_identity_bodies_are_counted_as_they_stream() -> None:
    assert _read(b"x" * CAP, 4096, "identity") == b"x" * CAP
    with pytest.raises(PayloadTooLarge, match=f"over {CAP} bytes as sent"):
        _read(b"x" * (CAP + 1), 4096, "identity")


def _zstd(payload: bytes, *, declare: bool = True) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=1, write_content_size=declare).compress(payload)


@settings(max_examples=40, deadline=None)
@given(payload=payloads, size=st.integers(1, 5000), declare=st.booleans())
def test_zstd_bodies_round_trip_whatever_the_chunking_with_or_without_a_declared_size(
    payload: bytes, size: int, declare: bool
) -> None:
    data = _zstd(payload, declare=declare)
    if len(payload) <= CAP:
        assert _read(data, size, "zstd") == payload
    else:
        with pytest.raises(PayloadTooLarge, match=f"{CAP}"):
            _read(data, size, "zstd")


@pytest.mark.parametrize("size", [7, 100_000])
def test_a_zstd_frame_declaring_less_than_it_holds_is_refused_not_expanded(size: int) -> None:
    # A frame fed as it arrives (it declares its size) must not decode past that size.
    data = bytearray(_zstd(bytes(CAP - 1)))
    # This frame stores its content size in 2 bytes, as the size minus 256 (RFC 8878, 3.1.1.1.4).
    declared = (CAP - 1 - 256).to_bytes(2, "little")
    at = data.find(declared, 4, 18)
    assert at > 0, data[:18].hex()
    data[at : at + 2] = (300 - 256).to_bytes(2, "little")
    import zstandard

    assert zstandard.frame_content_size(bytes(data)) == 300
    with pytest.raises(MalformedBody, match="not valid zstd"):
        _read(bytes(data), size, "zstd")
