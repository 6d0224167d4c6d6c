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


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    body: Any = None
    retry_after: float | None = None
    problem: str = ""


def post(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], *, deadline: float,
    clock: Callable[[], float], meanwhile: Callable[[], None],
) -> Answer:
    """POST ``body``; ``meanwhile`` runs while the request travels (on this thread).

    The request runs on a helper thread and is abandoned if it has not answered within
    ``deadline`` seconds (httpx's own per-phase timeouts, set to the same value, end the
    abandoned thread soon after)."""
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(client.post(url, content=body, headers=headers, timeout=httpx.Timeout(deadline)))
        except httpx.HTTPError as exc:
            outcome.append(exc)
        except Exception as exc:  # noqa: BLE001 - a faulty transport must not kill the service
            outcome.append(exc)

    crashpoint.reach("before_request")
    worker = threading.Thread(target=send, name="edgepack-sync-request", daemon=True)
    sent_at = time.monotonic()
    worker.start()
    meanwhile()
    worker.join(max(0.0, sent_at + deadline - time.monotonic()))
    if worker.is_alive() or not outcome:
        return Answer(None, problem=f"no answer within the {deadline:g} s request deadline")
    response = outcome[0]
    if isinstance(response, httpx.TimeoutException):
        return Answer(None, problem=f"timed out ({type(response).__name__})")
    if isinstance(response, Exception):
        return Answer(None, problem=f"{type(response).__name__}: {response}")
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    problem = parsed.get("error", "") if isinstance(parsed, dict) else response.text[:200]
    return Answer(response.status_code, parsed, retry_after(response.headers.get("Retry-After"), clock()), str(problem))


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
