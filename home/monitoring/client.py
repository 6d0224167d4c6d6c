"""HTTP client of the monitoring routes (httpx only): ``edgepack report --endpoint`` and
``edgepack bundles upload``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .errors import MonitoringError


class MonitoringHttpError(MonitoringError):
    """The collector could not be reached or refused; ``status`` is 0 without an answer."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


_HINTS = {
    401: "; check --token-file (a revoked or rotated token is refused)",
    403: "; monitoring needs an admin token: edgepack token add --admin NAME",
}


def _call(
    method: str, url: str, token: str, *, timeout: float, transport: httpx.BaseTransport | None, wait: float = 0.0, **kwargs: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    deadline = time.monotonic() + wait
    while True:
        try:
            with httpx.Client(timeout=timeout, transport=transport) as client:
                response = client.request(method, url, headers=headers, **kwargs)
            break
        except httpx.ConnectError as exc:
            # A collector that is just starting refuses connections: try again until ``wait`` is up.
            if time.monotonic() >= deadline:
                raise MonitoringHttpError(f"cannot reach the collector at {url}: {exc}; check --endpoint and that the collector runs") from exc
            time.sleep(0.2)
        except httpx.HTTPError as exc:
            raise MonitoringHttpError(f"cannot reach the collector at {url}: {exc}; check --endpoint and that the collector runs") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code not in (200, 201):
        problem = body.get("error") if isinstance(body, dict) else response.text[:200]
        raise MonitoringHttpError(
            f"the collector answered {response.status_code} to {method} {url}: {problem}{_HINTS.get(response.status_code, '')}",
            status=response.status_code,
        )
    if not isinstance(body, dict):
        raise MonitoringHttpError(f"the collector at {url} answered without a JSON object; is it an edgepack collector?")
    return body


def fetch_report(
    endpoint: str, token: str, model: str, *, version: str | None = None, since: str = "24h", device: str | None = None,
    timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    params = {"model": model, "since": since, **({"version": version} if version else {}), **({"device": device} if device else {})}
    return _call("GET", endpoint.rstrip("/") + "/v1/report", token, timeout=timeout, transport=transport, params=params)


def upload_bundle(
    endpoint: str, token: str, path: Path, *, sha256: str | None = None, timeout: float = 60.0, wait: float = 0.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """``POST /v1/bundles`` with the file at ``path`` (an .edgepkg, or a manifest.json with ``sha256``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MonitoringError(f"cannot read {path}: {exc.strerror or exc}") from exc
    params = {"sha256": sha256} if sha256 else None
    return _call(
        "POST", endpoint.rstrip("/") + "/v1/bundles", token, timeout=timeout, transport=transport, wait=wait, content=data, params=params,
        headers={"Content-Type": "application/octet-stream"},
    )
