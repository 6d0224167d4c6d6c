"""The collector's monitoring routes (admin token for all of them):

- ``POST /v1/bundles``: body = an ``.edgepkg`` (verified) or its ``manifest.json`` with
  ``?sha256=`` (not verifiable); 201 stored, 200 already stored, 409 a different manifest
  under that sha256, 400/413/422 a bad body;
- ``GET /v1/report?model=M[&version=V][&since=24h][&device=D]``: the drift report as JSON;
- ``GET /v1/models``: stored manifests per model and version;
- ``GET /v1/fleet``: devices, last seen, records, counters, versions;
- ``GET /metrics``: Prometheus text format.

Everything touching SQLite runs on one thread of its own with one connection: folding
records into counts writes, and must neither run on the event loop nor share the
collector's writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import Forbidden, RequestError
from ..stores.sqlite import read_stats
from ..stores.write_lock import close as close_connection
from ..tokens import ADMIN
from . import metrics
from .bundles import adopt_released, connect, parse_upload, register_manifest
from .errors import ManifestConflict, ManifestError, MonitoringError, UnknownModel
from .fleet import fleet
from .report import build_report, known_models
from .window import parse_window

if TYPE_CHECKING:
    from ..app import Collector

logger = logging.getLogger("edgepack.collector")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
"""Largest ``POST /v1/bundles`` body (``runtime``'s own bundle limit applies when it is read)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Monitoring:
    """Route handlers; one reading-and-folding connection on one thread."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-monitoring")
        self._conn: Any = None
        # Manifests also come from releases: bundles published in the repository this
        # collector serves are adopted before each monitoring call (names seen, once each).
        settings = collector.settings
        releases = settings.releases_path or (settings.db_path.parent / "releases" if settings.db_path else None)
        self._released = None if releases is None else Path(releases) / "bundles"
        self._adopted: set[str] = set()
        self.latency_registry = metrics.CollectorRegistry()
        """Where ``BatchTiming`` (installed by ``create_app``) observes batch latency."""

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            if self._conn is None:
                self._conn = connect(self.collector.settings.db_path)
            if self._released is not None:
                adopt_released(self._conn, self._released, self._adopted)
            return fn(self._conn, *args, **kwargs)

        return asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _admin(self, request: Request) -> None:
        identity = self.collector._identity(request)
        if identity.role != ADMIN:
            raise Forbidden(
                f"{identity.name!r} holds a device token; monitoring reads the whole fleet and needs an admin token "
                "('edgepack token add --admin NAME')"
            )

    async def _guarded(self, request: Request, work: Any) -> Response:
        try:
            self._admin(request)
            if self.collector.settings.db_path is None:
                return _error(
                    501,
                    "monitoring (manifests, drift, reports, /metrics, the dashboard) runs on the SQLite store only; "
                    "this collector stores on PostgreSQL: export the records to Parquet ('edgepack export') to analyse them",
                )
            return await work()
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)
        except UnknownModel as exc:
            return _error(404, str(exc))
        except ManifestConflict as exc:
            return _error(409, str(exc))
        except ManifestError as exc:
            return _error(422, str(exc))
        except MonitoringError as exc:
            return _error(400, str(exc))
        except sqlite3.Error as exc:
            logger.error("monitoring could not read the store: %s", exc)
            return JSONResponse(
                {"error": f"the collector could not read its store ({exc}); try again later"},
                status_code=503, headers={"Retry-After": str(self.collector.settings.retry_after_seconds)},
            )

    async def post_bundle(self, request: Request) -> Response:
        async def work() -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
                return _error(413, f"body of {declared} bytes is over the limit of {MAX_UPLOAD_BYTES} for a bundle upload")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    return _error(413, f"body is over the limit of {MAX_UPLOAD_BYTES} bytes for a bundle upload")
                chunks.append(chunk)
            body = b"".join(chunks)
            if not body:
                return _error(400, "empty body; expected an .edgepkg file, or its manifest.json with ?sha256=")
            sha256, manifest_bytes, verified = await asyncio.get_running_loop().run_in_executor(
                None, lambda: parse_upload(body, sha256=request.query_params.get("sha256"))
            )
            stored = await self._run(register_manifest, sha256, manifest_bytes, verified=verified)
            logger.info("manifest of %s v%s stored as bundle %s (verified: %s)", stored.model, stored.version, sha256, verified)
            return JSONResponse(
                {"sha256": stored.sha256, "model": stored.model, "version": stored.version, "created": stored.created,
                 "verified": stored.verified},
                status_code=201 if stored.created else 200,
            )

        return await self._guarded(request, work)

    async def get_report(self, request: Request) -> Response:
        async def work() -> Response:
            model = request.query_params.get("model")
            if not model:
                return _error(400, "missing ?model=NAME (the registry name of the model to report on)")
            since = parse_window(request.query_params.get("since", "24h"))
            report = await self._run(
                build_report, model, version=request.query_params.get("version"), since_seconds=since,
                device=request.query_params.get("device"),
            )
            return JSONResponse(report)

        return await self._guarded(request, work)

    async def get_models(self, request: Request) -> Response:
        def models(conn: Any) -> dict[str, Any]:
            from .aggregate import create

            create(conn)
            out: dict[str, Any] = {name: [] for name in known_models(conn)}
            for sha, model, version, received in conn.execute(
                "SELECT sha256, model, version, received_at FROM bundles ORDER BY model, received_at"
            ):
                out.setdefault(model, []).append({"sha256": sha, "version": version, "received_at": received})
            return {"models": out}

        async def work() -> Response:
            return JSONResponse(await self._run(models))

        return await self._guarded(request, work)

    async def get_fleet(self, request: Request) -> Response:
        async def work() -> Response:
            return JSONResponse(await self._run(fleet))

        return await self._guarded(request, work)

    def _scrape(self, conn: Any) -> bytes:
        from .aggregate import create

        create(conn)
        reports = []
        for model in {row[0] for row in conn.execute("SELECT DISTINCT model FROM bundles")}:
            try:
                reports.append(build_report(conn, model))
            except UnknownModel:
                continue
        gauges = metrics.families(fleet(conn), reports, read_stats(conn, self.collector.settings.db_path))
        return metrics.exposition(self.latency_registry, gauges)

    async def get_metrics(self, request: Request) -> Response:
        async def work() -> Response:
            return Response(await self._run(self._scrape), media_type=metrics.CONTENT_TYPE)

        return await self._guarded(request, work)

    def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                close_connection(self._conn)
                self._conn = None

        self._pool.submit(close).result()
        self._pool.shutdown(wait=True)


def monitoring_for(collector: Collector) -> Monitoring:
    """The one ``Monitoring`` of ``collector`` (made on first use)."""
    existing = getattr(collector, "_monitoring", None)
    if existing is None:
        existing = Monitoring(collector)
        collector._monitoring = existing  # type: ignore[attr-defined]
    return existing
