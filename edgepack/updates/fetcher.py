"""``HttpxFetcher``: TUF's network layer on httpx, with the device token, a conditional
timestamp poll and resumable (HTTP Range) bundle downloads.

ngclient fetches ``root.json`` N+1 and ``timestamp.json`` on every refresh. To make a
no-change poll one request, the update loop first asks ``poll_timestamp`` (a GET with
``If-None-Match``): a 304 means nothing changed and no refresh runs. A 200 body is kept and
handed to ngclient by ``_fetch`` when it asks for the timestamp during the refresh that
follows, so the timestamp crosses the network once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from .errors import DownloadInterrupted, UpdateRefused

CHUNK = 64 * 1024


class HttpxFetcher(FetcherInterface):
    """Every request carries the device token; ``client`` may be injected (tests, proxies)."""

    def __init__(self, token: str, *, timeout: float = 30.0, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {token}"})
        if client is not None:
            self.client.headers["authorization"] = f"Bearer {token}"
        self._prefetched: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.requests = 0
        """Requests sent (the benchmark and the poll-cost test read it)."""

    def close(self) -> None:
        self.client.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url in self._prefetched:
            return iter([self._prefetched.pop(url)])
        return self._stream(url)

    def _stream(self, url: str) -> Iterator[bytes]:
        # Streamed, so that ngclient's length limit stops an endless answer after the limit,
        # not after the device's memory is full.
        self.requests += 1
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise exceptions.DownloadHTTPError(f"GET {url}: {response.status_code}", response.status_code)
                yield from response.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise exceptions.DownloadError(f"GET {url} failed: {exc}") from exc

    def poll_timestamp(self, url: str, max_length: int) -> bool:
        """True if ``url`` changed since the last call (its body is then kept for ``_fetch``).

        One conditional GET; a 304 answer has no body. At most ``max_length`` bytes are read."""
        headers = {}
        if url in self.etags:
            headers["if-none-match"] = self.etags[url]
        self.requests += 1
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return False
                if response.status_code >= 400:
                    raise exceptions.DownloadHTTPError(f"GET {url}: {response.status_code}", response.status_code)
                body = bytearray()
                for chunk in response.iter_bytes(CHUNK):
                    body += chunk
                    if len(body) > max_length:
                        raise exceptions.DownloadLengthMismatchError(
                            f"timestamp.json is over {max_length} bytes (endless data); refused")
                etag = response.headers.get("etag")
        except httpx.HTTPError as exc:
            raise exceptions.DownloadError(f"GET {url} failed: {exc}") from exc
        self._prefetched[url] = bytes(body)
        if etag:
            self.etags[url] = etag
        else:
            self.etags.pop(url, None)
        return True

    def forget(self, url: str) -> None:
        """Make the next ``poll_timestamp`` unconditional (after a refresh that failed)."""
        self.etags.pop(url, None)
        self._prefetched.pop(url, None)

    def download_resumable(self, url: str, part: Path, length: int, *, pause: object = None) -> Path:
        """Download ``url`` into ``part``, continuing from the bytes already there.

        Never holds or writes more than ``length`` bytes (the signed target's length): a
        server that sends more is refused (an endless-data attack) and the part deleted.
        ``DownloadInterrupted`` keeps the part for the next attempt."""
        have = part.stat().st_size if part.exists() else 0
        if have > length:
            part.unlink()
            have = 0
        if have == length:
            return part
        headers = {"range": f"bytes={have}-"} if have else {}
        self.requests += 1
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:  # our part is no prefix of the file: start over
                    part.unlink(missing_ok=True)
                    raise DownloadInterrupted(f"{url}: the server refused to resume (416); starting over on the next poll")
                if response.status_code >= 400:
                    raise UpdateRefused(f"bundle download failed: GET {url} answered {response.status_code}")
                mode = "ab" if response.status_code == 206 else "wb"
                written = have if mode == "ab" else 0
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC), 0o600)
                with os.fdopen(fd, mode) as out:
                    # Several chunks even for a small bundle: each is a point a crash can interrupt.
                    for chunk in response.iter_bytes(min(CHUNK, max(1024, length // 8))):
                        written += len(chunk)
                        if written > length:
                            out.close()
                            part.unlink(missing_ok=True)
                            raise UpdateRefused(
                                f"the server sent more than the {length} bytes the signed release announces "
                                "(endless-data attack or a wrong bundle); download discarded"
                            )
                        out.write(chunk)
                        if callable(pause):
                            out.flush()
                            pause(written)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            raise DownloadInterrupted(f"download of {url} interrupted ({exc}); it resumes on the next poll") from exc
        size = part.stat().st_size
        if size < length:
            raise DownloadInterrupted(f"download of {url} stopped at {size} of {length} bytes; it resumes on the next poll")
        return part
