"""The collector as an ASGI app (Starlette).

Request checks run cheapest first and before anything is stored: token (401), role
(403: an admin token uploads nothing), uploads in progress (429 for this device, 503 for
all), encoding and type (415), declared size (413), streamed size and gzip or zstd (413/400),
bytes in memory (429/503), body deadline (408), JSON or MessagePack (400), schema (422).
A batch comes as JSON (``home.schema``) or as the MessagePack batch devices send
(``home.packed``); both become the same ``Batch``, stored the same way. Only a fully
valid batch reaches the store, on its single writer thread.

``GET /v1/stats`` answers a device token with its own device's totals only, and an admin
token with the fleet's (or one device's, with ``?device=ID``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .feedback import routes as feedback_routes
from .admission import Admission, Ticket
from .dashboard.routes import dashboard_routes
from .monitoring.metrics import BatchTiming
from .monitoring.routes import monitoring_for
from .body import (
    MEDIA_TYPES,
    PACKED_MEDIA_TYPE,
    check_content_type,
    check_declared_length,
    content_encoding,
    decode_json,
    read_body,
)
from .errors import Forbidden, RequestError, RequestTimeout, StoreError, Unauthorized
from .openapi import build_spec
from .packed import parse_packed
from .schema import Batch, parse_batch
from .settings import CollectorSettings
from .stores.backends import backend_for
from .stores.sqlite import IngestResult, RecordStore, StatsSource
from .tokens import ADMIN, DEVICE, Identity, TokenStore
from .releases.routes import release_routes

logger = logging.getLogger("edgepack.collector")
T = TypeVar("T")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Collector:
    """State shared by the routes: settings, tokens, and the store behind its writer thread."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings.tokens_path)
        self.spec = build_spec(settings)
        self.admission = Admission(settings)
        self._store: RecordStore | None = None
        # One thread owns the one SQLite connection: writes are serialised by construction
        # and the event loop never waits on the disk.
        self._writer: ThreadPoolExecutor | None = None
        # Stats are read on a connection and thread of their own: however many are asked
        # for, and however long a fleet-wide count takes, no batch waits behind them.
        self._reader: ThreadPoolExecutor | None = None
        self._stats: StatsSource | None = None

    async def _on_writer(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._on(self._writer, fn, *args, **kwargs)

    async def _on(self, pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if pool is None:
            raise StoreError("the store is not open (the app was not started through its lifespan)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        backend = backend_for(self.settings)
        self._writer = ThreadPoolExecutor(max_workers=backend.writer_threads, thread_name_prefix="collector-store")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-stats")
        try:
            self._store = await self._on_writer(backend.open_store)
            self._stats = await self._on(self._reader, backend.open_reader)
            logger.info("store %s open; %d device(s) hold tokens", backend.description, len(self.tokens.devices))
            yield
        finally:
            if self._stats is not None:
                await self._on(self._reader, self._stats.close)
                self._stats = None
            self._reader.shutdown(wait=True)
            if self._store is not None:
                await self._on_writer(self._store.close)
                self._store = None
            self._writer.shutdown(wait=True)
            logger.info("store %s closed", backend.description)

    def _identity(self, request: Request) -> Identity:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthorized("missing Authorization header; expected 'Authorization: Bearer <device token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header is not a bearer token; expected 'Authorization: Bearer <device token>'")
        identity = self.tokens.identity_for(token.strip())
        if identity is None:
            raise Unauthorized(
                "token is not known to this collector (never issued, rotated or revoked); "
                "expected a token made by 'edgepack token add'"
            )
        return identity

    async def post_batch(self, request: Request) -> Response:
        try:
            identity = self._identity(request)
        except RequestError as exc:
            logger.warning("batch refused (%d) from unauthenticated client: %s", exc.status, exc)
            return _error(exc.status, str(exc), exc.headers)
        device = identity.name
        try:
            if identity.role != DEVICE:
                raise Forbidden(
                    f"{identity.name!r} holds an admin token, which reads the fleet but uploads nothing; "
                    "send batches with the device's own token"
                )
            with self.admission.admit(device) as ticket:
                return await self._receive(request, device, ticket)
        except RequestError as exc:
            logger.warning("batch refused (%d) from %s: %s", exc.status, device, exc)
            return _error(exc.status, str(exc), exc.headers)

    async def _read(self, request: Request, ticket: Ticket, media_types: tuple[str, ...] = MEDIA_TYPES) -> tuple[bytes, str]:
        """The whole (decompressed) body and its media type, one of ``media_types``."""
        encoding = content_encoding(request.headers)
        media_type = check_content_type(request.headers, media_types)
        check_declared_length(request.headers, self.settings)
        deadline = self.settings.body_timeout_seconds
        try:
            async with asyncio.timeout(deadline):
                return await read_body(request.stream(), encoding, self.settings, ticket.reserve), media_type
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within {deadline:g} s; nothing was stored, send it again "
                "(smaller batches arrive sooner on a slow link)"
            ) from None

    async def _receive(self, request: Request, device: str, ticket: Ticket) -> Response:
        try:
            body, media_type = await self._read(request, ticket)
            batch: Batch = await run_in_threadpool(self._parse, body, media_type)
            del body
            result: IngestResult = await self._on_writer(
                self._store_or_fail().ingest, device, batch, received_at=time.time()
            )
        except StoreError as exc:
            logger.error("batch from %s not stored: %s", device, exc)
            return self._retry_later(f"the collector could not store the batch ({exc}); nothing was stored, send it again later")
        except ClientDisconnect:
            logger.warning("client of device %s disconnected while sending a batch; nothing stored", device)
            return Response(status_code=400)
        logger.info(
            "batch %s from %s: %d records, %d accepted, %d duplicates",
            batch.batch_id,
            device,
            len(batch.records),
            result.accepted,
            result.duplicates,
        )
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    def _retry_later(self, message: str) -> JSONResponse:
        return _error(503, message, {"Retry-After": str(self.settings.retry_after_seconds)})

    def _parse(self, body: bytes, media_type: str) -> Batch:
        if media_type == PACKED_MEDIA_TYPE:
            return parse_packed(body, max_records=self.settings.max_records)
        return parse_batch(decode_json(body), max_records=self.settings.max_records, source=body)

    def _store_or_fail(self) -> RecordStore:
        if self._store is None:
            raise StoreError("the store is not open")
        return self._store

    def _stats_scope(self, request: Request) -> str | None:
        """The device whose stats ``request`` may read, or None for the fleet."""
        identity = self._identity(request)
        asked = request.query_params.get("device")
        if identity.role == ADMIN:
            return asked
        if asked is not None and asked != identity.name:
            raise Forbidden(
                f"a device token reads only its own device's stats ({identity.name!r}), not {asked!r}; "
                "fleet-wide and other devices' stats need an admin token ('edgepack token add --admin NAME')"
            )
        return identity.name

    async def get_stats(self, request: Request) -> Response:
        try:
            device = self._stats_scope(request)
            if self._stats is None:
                raise StoreError("the store is not open")
            stats = await self._on(self._reader, self._stats.stats, device)
        except RequestError as exc:
            return _error(exc.status, str(exc), exc.headers)
        except StoreError as exc:
            logger.error("stats not available: %s", exc)
            return self._retry_later(f"the collector could not read its store ({exc}); try again later")
        return JSONResponse(stats)

    async def get_health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_openapi(self, request: Request) -> Response:
        return JSONResponse(self.spec)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", dict(exc.headers or {}))


def create_app(settings: CollectorSettings) -> Starlette:
    """The collector ASGI app; the tokens file is read now, the store opened at startup."""
    collector = Collector(settings)
    routes = [
        Route("/v1/batches", collector.post_batch, methods=["POST"]),
        Route("/v1/stats", collector.get_stats, methods=["GET"]),
        Route("/healthz", collector.get_health, methods=["GET"]),
        Route("/openapi.json", collector.get_openapi, methods=["GET"]),
        Route("/v1/feedback", feedback_routes.post_feedback(collector), methods=["POST"]),
        Route("/v1/labeled", feedback_routes.get_labeled(collector), methods=["GET"]),
        *release_routes(collector),
        Route("/v1/bundles", monitoring_for(collector).post_bundle, methods=["POST"]),
        Route("/v1/report", monitoring_for(collector).get_report, methods=["GET"]),
        Route("/v1/models", monitoring_for(collector).get_models, methods=["GET"]),
        Route("/v1/fleet", monitoring_for(collector).get_fleet, methods=["GET"]),
        Route("/metrics", monitoring_for(collector).get_metrics, methods=["GET"]),
        *dashboard_routes(),
    ]
    app = Starlette(routes=routes, lifespan=collector.lifespan, exception_handlers={HTTPException: _http_error})
    app.add_middleware(BatchTiming, registry=monitoring_for(collector).latency_registry)
    app.state.collector = collector
    return app
