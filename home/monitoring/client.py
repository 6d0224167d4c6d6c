"""HTTP client of the monitoring routes (httpx only): ``edgepack report --endpoint`` and
``edgepack bundles upload``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ..client import request_json
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


def _call(method: str, url: str, token: str, **kwargs: Any) -> dict[str, Any]:
    return request_json(method, url, token, error=MonitoringHttpError, hints=_HINTS, **kwargs)


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
