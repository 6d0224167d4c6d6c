"""The ASGI application of ``edgepack serve``: Open Inference Protocol V2 plus ``/v1/predict``.

A plain ASGI callable rather than a framework: six routes, and the request path is the
cost that matters (a framework's request/response objects and router cost tens of
microseconds a call, against a target of 150 µs added over an in-process prediction).
uvicorn (with httptools) does the HTTP.

The model comes from ``source.model`` (a ``ModelSlot``, a ``StoreFollower``, anything with
a ``model`` attribute), read once per request: a request started before a switch finishes
on the model it started with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from runtime import EdgeError, EdgeModel, InputError

from .errors import RequestError
from .options import DEFAULT_INLINE_ROWS, DEFAULT_MAX_BODY, ServeOptions
from .protocol import ModelProtocol

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_DUMPS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class ModelSource(Protocol):
    @property
    def model(self) -> EdgeModel | None: ...


class FeedbackSink(Protocol):
    """Where ``POST /v1/feedback`` queues labels: a ``telemetry.Buffer`` (``serve --buffer``)."""

    def feedback(self, record_id: str, label: Any, *, ts: float | None = None) -> bool: ...


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=_DUMPS)


class ServeApp:
    """``app = ServeApp(ModelSlot("model.edgepkg"))``; run it with uvicorn."""

    def __init__(
        self, source: ModelSource, options: ServeOptions | None = None, *, server_version: str = "", feedback: FeedbackSink | None = None
    ) -> None:
        self.source = source
        self.feedback = feedback
        self.max_body = options.max_body_bytes if options else DEFAULT_MAX_BODY
        self.inline_rows = options.inline_rows if options else DEFAULT_INLINE_ROWS
        self.server_version = server_version
        self._protocols: dict[str, ModelProtocol] = {}

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _JSON
        try:
            status, body = await self._route(scope["method"], scope["path"], scope, receive)
        except RequestError as exc:
            status, body = exc.status, _dumps({"error": exc.message})
            if status == 413:
                headers = [*_JSON, (b"connection", b"close")]
            elif exc.allow is not None:
                headers = [*_JSON, (b"allow", exc.allow.encode())]
        except _Disconnected:
            return
        await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    # -- routing --------------------------------------------------------------------------

    async def _route(self, method: str, path: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        if path == "/v1/predict":
            _allow(method, "POST")
            return await self._predict_v1(await self._body(scope, receive))
        if path == "/v1/feedback":
            _allow(method, "POST")
            return await self._feedback(await self._body(scope, receive))
        parts = path.split("/")
        if len(parts) < 2 or parts[1] != "v2":
            raise RequestError(404, f"no endpoint {path}; see /v2 (Open Inference Protocol), /v1/predict and /v1/feedback")
        parts = parts[2:]
        if parts == [] or parts == [""]:
            _allow(method, "GET")
            return 200, _dumps({"name": "edgepack", "version": self.server_version, "extensions": []})
        if parts == ["health", "live"]:
            _allow(method, "GET")
            return 200, b""
        if parts == ["health", "ready"]:
            _allow(method, "GET")
            return self._ready()
        if parts[0] != "models" or len(parts) < 2:
            raise RequestError(404, f"no endpoint {path}")
        name, rest = parts[1], parts[2:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        model = self._model(name, version)
        if rest == []:
            _allow(method, "GET")
            return 200, _dumps(self._protocol(model).metadata)
        if rest == ["ready"]:
            _allow(method, "GET")
            return 200, _dumps({"name": model.name, "ready": True})
        if rest == ["infer"]:
            _allow(method, "POST")
            return await self._infer(model, await self._body(scope, receive))
        raise RequestError(404, f"no endpoint {path}")

    def _ready(self) -> tuple[int, bytes]:
        if self.source.model is not None:
            return 200, b""
        why = getattr(self.source, "last_error", None) or "no model loaded yet (the model store holds no bundle)"
        # The protocol: 200 means ready, a 4xx status means not ready.
        raise RequestError(400, f"not ready: {why}")

    def _model(self, name: str, version: str | None) -> EdgeModel:
        model = self.source.model
        if model is None:
            raise RequestError(404, f"model {name!r} is not loaded: nothing is served yet")
        if name != model.name:
            raise RequestError(404, f"no model {name!r} here; this server serves {model.name!r}")
        if version is not None and version != model.version:
            raise RequestError(404, f"model {name!r} has no version {version!r} here; it serves version {model.version!r}")
        return model

    def _protocol(self, model: EdgeModel) -> ModelProtocol:
        protocol = self._protocols.get(model.sha256)
        if protocol is None or protocol.model is not model:
            protocol = ModelProtocol.of(model)
            if len(self._protocols) > 4:
                self._protocols.clear()
            self._protocols[model.sha256] = protocol
        return protocol

    async def _body(self, scope: Scope, receive: Receive) -> Any:
        limit = self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise RequestError(400, f"Content-Length {value.decode('latin-1')!r} is not a number") from None
                if declared > limit:
                    raise RequestError(413, f"the body is {declared} bytes, over the limit of {limit}; send fewer rows per request")
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):
            chunks = [body]
            size = len(body)
            while message.get("more_body"):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"the body is over the limit of {limit} bytes; send fewer rows per request")
                chunks.append(chunk)
            body = b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise _Disconnected
        if len(body) > limit:
            raise RequestError(413, f"the body is {len(body)} bytes, over the limit of {limit}; send fewer rows per request")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None

    # -- predicting -----------------------------------------------------------------------

    async def _run(self, rows: int, fn: Callable[[], Any]) -> Any:
        if rows <= self.inline_rows:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def _predict_v1(self, data: Any) -> tuple[int, bytes]:
        model = self.source.model
        if model is None:
            raise RequestError(503, "no model loaded yet: the model store holds no bundle")
        if not isinstance(data, (dict, list)):
            raise RequestError(422, f"/v1/predict takes one object (feature -> value) or a list of them, got JSON {type(data).__name__}")
        try:
            result = await self._run(1 if isinstance(data, dict) else len(data), lambda: model.predict(data))
        except InputError as exc:
            raise RequestError(422, str(exc)) from None
        except EdgeError as exc:
            raise RequestError(500, f"prediction failed: {exc}") from None
        return 200, _dumps(result)

    async def _feedback(self, data: Any) -> tuple[int, bytes]:
        # The ground truth for predictions this process recorded: an app in any language
        # hands the label for a ``record_id`` it was answered, and it goes home with sync.
        if self.feedback is None:
            raise RequestError(
                404, "this serve records no telemetry, so it takes no feedback: start it with --buffer FILE "
                "(edgepack agent does), and predictions then carry the record_id to label"
            )
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(item, dict) for item in items):
            raise RequestError(422, 'feedback is {"record_id": str, "label": value, "ts": seconds or null} or a non-empty list of them')
        for i, item in enumerate(items):
            where = "" if isinstance(data, dict) else f"item {i}: "
            unknown = set(item) - {"record_id", "label", "ts"}
            if unknown or "record_id" not in item or "label" not in item:
                raise RequestError(
                    422, f"{where}expected the keys record_id, label and optionally ts, got {sorted(item)}"
                )
        queued = already = 0
        sink = self.feedback
        for i, item in enumerate(items):
            try:
                if sink.feedback(item["record_id"], item["label"], ts=item.get("ts")):
                    queued += 1
                else:
                    already += 1
            except ValueError as exc:  # telemetry.FeedbackError: names the id, label or time
                where = "" if isinstance(data, dict) else f"item {i}: "
                raise RequestError(422, f"{where}{exc} (items before it are queued: {queued + already})") from None
            except Exception as exc:  # the buffer's storage failed: nothing of this item is queued
                raise RequestError(503, f"could not queue the label ({exc}); items before it are queued: {queued + already}") from None
        return 200, _dumps({"queued": queued, "already_queued": already})

    async def _infer(self, model: EdgeModel, request: Any) -> tuple[int, bytes]:
        protocol = self._protocol(model)
        rows, count, outputs = protocol.rows(request)
        try:
            if count == 1:
                results = [await self._run(1, lambda: model.predict(rows[0]))]
            else:
                results = await self._run(count, lambda: model.predict(rows))
        except InputError as exc:
            raise RequestError(422, str(exc)) from None
        except EdgeError as exc:
            raise RequestError(500, f"prediction failed: {exc}") from None
        return 200, _dumps(protocol.response(model, results, outputs, request.get("id")))


def _allow(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise RequestError(405, f"use {allowed} here, not {method}", allow=allowed)
