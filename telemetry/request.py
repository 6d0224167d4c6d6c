"""One HTTP request to the collector with an overall deadline, and what its answer says."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from . import crashpoint
from .errors import SyncConfigError


_TRANSIENT = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    body: Any = None
    retry_after: float | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """A 2xx: the collector took the request."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """No answer, or one that asks to try again later (408, 425, 429, 5xx)."""
        return self.status is None or self.status in _TRANSIENT or self.status >= 500


class Pending:
    """One request on its way, on a helper thread of its own; ``answer()`` waits for it.

    The request is abandoned if it has not answered within ``deadline`` seconds of being
    sent (httpx's own per-phase timeouts, set to the same value, end the abandoned
    thread soon after). Several may be on their way at once (the sync service keeps
    more than one batch in flight): ``httpx.Client`` is thread-safe and gives each its
    own pooled connection."""

    def __init__(self, client: httpx.Client, url: str, body: bytes, headers: dict[str, str], *, deadline: float,
                 clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self._clock = clock
        self._outcome: list[Any] = []
        self._answer: Answer | None = None
        self._worker = threading.Thread(target=self._send, args=(client, url, body, headers),
                                        name="edgepack-sync-request", daemon=True)
        self.sent_at = time.monotonic()
        self._worker.start()

    def _send(self, client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            self._outcome.append(client.post(url, content=body, headers=headers, timeout=httpx.Timeout(self.deadline)))
        except Exception as exc:  # noqa: BLE001 - a faulty transport must not kill the service
            self._outcome.append(exc)

    def answer(self) -> Answer:
        """The answer (waiting for it until the deadline); the same on every call."""
        if self._answer is None:
            self._worker.join(max(0.0, self.sent_at + self.deadline - time.monotonic()))
            self._answer = self._read()
        return self._answer

    def _read(self) -> Answer:
        if self._worker.is_alive() or not self._outcome:
            return Answer(None, problem=f"no answer within the {self.deadline:g} s request deadline")
        response = self._outcome[0]
        if isinstance(response, httpx.TimeoutException):
            return Answer(None, problem=f"timed out ({type(response).__name__})")
        if isinstance(response, Exception):
            return Answer(None, problem=f"{type(response).__name__}: {response}")
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        problem = parsed.get("error", "") if isinstance(parsed, dict) else response.text[:200]
        return Answer(response.status_code, parsed, retry_after(response.headers.get("Retry-After"), self._clock()), str(problem))


def send(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], *, deadline: float, clock: Callable[[], float],
) -> Pending:
    """Start POSTing ``body``; the returned ``Pending`` gives its answer."""
    crashpoint.reach("before_request")
    return Pending(client, url, body, headers, deadline=deadline, clock=clock)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def check_endpoint(endpoint: str) -> str:
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError) as exc:
        raise SyncConfigError(f"endpoint {endpoint!r} is not a URL ({exc}); expected e.g. http://collector:8787") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise SyncConfigError(f"endpoint {endpoint!r}: expected an http:// or https:// URL with a host, e.g. http://collector:8787")
    return str(endpoint).rstrip("/")
