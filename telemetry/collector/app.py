"""The collector as an ASGI app (Starlette).

Request checks run cheapest first and before anything is stored: token (401), encoding
and type (415), declared size (413), streamed size and gzip (413/400), JSON (400), schema
(422). Only a fully valid batch reaches the store, on its single writer thread.
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

from .body import check_content_type, check_declared_length, content_encoding, decode_json, read_body
from .errors import RequestError, StoreError, Unauthorized
from .openapi import build_spec
from .schema import Batch, parse_batch
from .settings import CollectorSettings
from .store import IngestResult, Store
from .tokens import TokenStore

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
        self._store: Store | None = None
        # One thread owns the one SQLite connection: writes are serialised by construction
        # and the event loop never waits on the disk.
        self._writer: ThreadPoolExecutor | None = None
        self._pending = 0

    async def _on_writer(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._writer is None:
            raise StoreError("the store is not open (the app was not started through its lifespan)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(*args, **kwargs))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-store")
        try:
            self._store = await self._on_writer(
                Store, self.settings.db_path, lock_timeout_seconds=self.settings.lock_timeout_seconds
            )
            logger.info("store %s open; %d device(s) hold tokens", self.settings.db_path, len(self.tokens.devices))
            yield
        finally:
            if self._store is not None:
                await self._on_writer(self._store.close)
                self._store = None
            self._writer.shutdown(wait=True)
            logger.info("store %s closed", self.settings.db_path)

    def _device(self, request: Request) -> str:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthorized("missing Authorization header; expected 'Authorization: Bearer <device token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header is not a bearer token; expected 'Authorization: Bearer <device token>'")
        device = self.tokens.device_for(token.strip())
        if device is None:
            raise Unauthorized("token is not known to this collector; expected a token made by 'edgepack token add'")
        return device

    def _retry_later(self, message: str) -> JSONResponse:
        return _error(503, message, {"Retry-After": str(self.settings.retry_after_seconds)})

    async def post_batch(self, request: Request) -> Response:
        device: str | None = None
        try:
            device = self._device(request)
        except RequestError as exc:
            logger.warning("batch refused (%d) from unauthenticated client: %s", exc.status, exc)
            return _error(exc.status, str(exc), exc.headers)
        if self._pending >= self.settings.max_pending_batches:
            logger.warning("batch from %s refused (503): %d batches already in progress", device, self._pending)
            return self._retry_later(
                f"the collector is busy with {self._pending} batches (at most {self.settings.max_pending_batches}); "
                "nothing was stored, send it again later"
            )
        # Counted on the event loop, so no lock is needed.
        self._pending += 1
        try:
            return await self._receive(request, device)
        finally:
            self._pending -= 1

    async def _receive(self, request: Request, device: str) -> Response:
        try:
            encoding = content_encoding(request.headers)
            check_content_type(request.headers)
            check_declared_length(request.headers, self.settings)
            body = await read_body(request.stream(), encoding, self.settings)
            batch: Batch = await run_in_threadpool(self._parse, body)
            result: IngestResult = await self._on_writer(
                self._store_or_fail().ingest, device, batch, received_at=time.time()
            )
        except RequestError as exc:
            logger.warning("batch refused (%d) from %s: %s", exc.status, device, exc)
            return _error(exc.status, str(exc), exc.headers)
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

    def _parse(self, body: bytes) -> Batch:
        return parse_batch(decode_json(body), max_records=self.settings.max_records, source=body)

    def _store_or_fail(self) -> Store:
        if self._store is None:
            raise StoreError("the store is not open")
        return self._store

    async def get_stats(self, request: Request) -> Response:
        try:
            self._device(request)
            stats = await self._on_writer(self._store_or_fail().stats)
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
    ]
    app = Starlette(routes=routes, lifespan=collector.lifespan, exception_handlers={HTTPException: _http_error})
    app.state.collector = collector
    return app
