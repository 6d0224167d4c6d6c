"""Reading what a collector stored: ``GET /v1/stats`` with a device or admin token, and
the one authenticated JSON request every home client makes (``request_json``).

httpx only, so ``edgepack stats`` works on a device install. A device token reads its
own device's totals; an admin token reads the fleet's (or, with ``device``, one device's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from .errors import CollectorError, HomeError


class StatsError(CollectorError):
    """The collector could not be reached or refused the request; ``status`` is 0 without an answer."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def request_json(
    method: str,
    url: str,
    token: str,
    *,
    error: Callable[..., HomeError],
    hints: dict[int, str],
    timeout: float,
    transport: httpx.BaseTransport | None = None,
    wait: float = 0.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """One authenticated request to a collector route that answers a JSON object.

    Every failure raises ``error(message, status=...)`` naming the URL and what to check
    (``hints`` by status code); a refused connection is retried for ``wait`` seconds, for
    a collector that is just starting.
    """
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    deadline = time.monotonic() + wait
    while True:
        try:
            with httpx.Client(timeout=timeout, transport=transport) as client:
                response = client.request(method, url, headers=headers, **kwargs)
            break
        except httpx.ConnectError as exc:
            if time.monotonic() >= deadline:
                raise error(f"cannot reach the collector at {url}: {exc}; check --endpoint and that the collector runs") from exc
            time.sleep(0.2)
        except httpx.HTTPError as exc:
            raise error(f"cannot reach the collector at {url}: {exc}; check --endpoint and that the collector runs") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code not in (200, 201):
        problem = body.get("error") if isinstance(body, dict) else response.text[:200]
        raise error(
            f"the collector answered {response.status_code} to {method} {url}: {problem}{hints.get(response.status_code, '')}",
            status=response.status_code,
        )
    if not isinstance(body, dict):
        raise error(f"the collector at {url} answered {response.status_code} without a JSON object (got {response.text[:200]!r}); is it an edgepack collector?")
    return body


_STATS_HINTS = {
    401: "; check --token-file (a revoked or rotated token is refused)",
    403: "; fleet-wide stats need an admin token: edgepack token add --admin NAME",
}


def fetch_stats(
    endpoint: str,
    token: str,
    *,
    device: str | None = None,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """The collector's ``/v1/stats`` answer for ``token`` (and ``device``, admin tokens only)."""
    url = endpoint.rstrip("/") + "/v1/stats"
    params = {"device": device} if device is not None else None
    body = request_json("GET", url, token, error=StatsError, hints=_STATS_HINTS, timeout=timeout, transport=transport, params=params)
    if "records" not in body:
        raise StatsError(f"the collector at {url} answered 200 without stats (got {str(body)[:200]!r}); is it an edgepack collector?")
    return body


def format_stats(stats: dict[str, Any]) -> str:
    """Stats as a few lines of text for people."""
    if stats.get("scope") == "device":
        lines = [f"device {stats.get('device')}: {stats['records']} records stored"]
    else:
        lines = [f"fleet: {stats['records']} records stored from {stats['devices']} devices"]
    by_model: dict[str, dict[str, int]] = stats.get("by_model") or {}
    for model, versions in sorted(by_model.items()):
        for version, count in sorted(versions.items(), key=lambda item: (len(item[0]), item[0])):
            lines.append(f"  {model} v{version}: {count}")
    counters: dict[str, int] = stats.get("counters") or {
        key: stats[key] for key in ("dropped", "sampled_out", "dead_lettered") if key in stats
    }
    if counters:
        lines.append("counters reported by the device(s): " + ", ".join(f"{name} {value}" for name, value in counters.items()))
    return "\n".join(lines)
