"""The collector's routes for ground truth: ``POST /v1/feedback`` and ``GET /v1/labeled``.

``POST /v1/feedback`` (JSON, gzip allowed, the same size limits as batches)::

    {"batch_id": str, "labels": [{"record_id": str, "label": scalar, "ts": float | null}]}

A device token sends labels for its own device's records; an admin token for any
device, with ``"device"`` in each label (and may say ``"source": "import"`` for labels
read from a file; the default is ``"api"``). Answers (see ``home.feedback.labels`` for the rules):
200 ``{"accepted": n, "duplicates": m, "conflicts": [], "invalid": []}``; 409 when a label
conflicts with a stored one and 422 when one does not fit its record's model, both with
nothing stored and the labels named in ``conflicts`` / ``invalid`` (and ``error``).

``GET /v1/labeled?model=NAME[&since=30d][&format=parquet|jsonl]`` (admin token): the
model's records joined with their labels (``home.feedback.labeled``), the training and scoring data
for the next round (``edgepack promote --from-collector``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..body import JSON_MEDIA_TYPE, decode_json
from ..errors import Forbidden, RequestError, SchemaError, StoreError
from .labels import FeedbackOutcome, LabelIn, parse_feedback
from .storage import collector_feedback
from ..tokens import ADMIN

if TYPE_CHECKING:
    from ..app import Collector

logger = logging.getLogger("edgepack.collector")
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _ingest(collector: Collector, labels: list[LabelIn], source: str) -> FeedbackOutcome:
    # On a writer thread of the collector. SQLite: after the batches queued before it, on
    # a connection per request (labels are few next to records, and nothing stays open past
    # shutdown). PostgreSQL: on a connection of the store's pool, beside other writers.
    with collector_feedback(collector) as store:
        return store.ingest(labels, received_at=time.time(), source=source)


def post_feedback(collector: Collector) -> Handler:
    """The ``POST /v1/feedback`` handler of ``collector``."""

    async def handler(request: Request) -> Response:
        try:
            identity = collector._identity(request)
        except RequestError as exc:
            return _error(exc.status, str(exc), exc.headers)
        admin = identity.role == ADMIN
        try:
            with collector.admission.admit(identity.name) as ticket:
                # Labels travel as JSON only: they are few, and any client can write them.
                body, _ = await collector._read(request, ticket, (JSON_MEDIA_TYPE,))
            document = await run_in_threadpool(decode_json, body)
            batch_id, labels = await run_in_threadpool(parse_feedback, document, device=None if admin else identity.name)
            source = document.get("source", "api") if admin else "device"
            outcome = await collector._on_writer(_ingest, collector, labels, source)
        except RequestError as exc:
            logger.warning("feedback refused (%d) from %s: %s", exc.status, identity.name, exc)
            return _error(exc.status, str(exc), exc.headers)
        except StoreError as exc:
            logger.error("feedback from %s not stored: %s", identity.name, exc)
            return _error(503, f"the collector could not store the labels ({exc}); nothing was stored, send them again later",
                          {"Retry-After": str(collector.settings.retry_after_seconds)})
        except ClientDisconnect:
            return Response(status_code=400)
        logger.info("feedback %s from %s: %d labels, %d accepted, %d duplicates, %d conflicts, %d invalid",
                    batch_id, identity.name, len(labels), outcome.accepted, outcome.duplicates,
                    len(outcome.conflicts), len(outcome.invalid))
        return JSONResponse(outcome.as_json(), status_code=outcome.status)

    return handler


def get_labeled(collector: Collector) -> Handler:
    """The ``GET /v1/labeled`` handler of ``collector`` (admin token)."""

    async def handler(request: Request) -> Response:
        from .labeled import LabeledError, labeled_jsonl, labeled_parquet, parse_since

        try:
            identity = collector._identity(request)
            if identity.role != ADMIN:
                raise Forbidden(
                    f"{identity.name!r} holds a device token; labeled fleet data needs an admin token "
                    "('edgepack token add --admin NAME')"
                )
            params = request.query_params
            model = params.get("model")
            if not model:
                raise SchemaError("is missing; expected ?model=NAME (the registered model name)", field="model")
            try:
                since = parse_since(params.get("since"))
            except LabeledError as exc:
                raise SchemaError(str(exc), field="since") from None
            form = params.get("format", "parquet")
            if form not in ("parquet", "jsonl"):
                raise SchemaError(f"is {form!r}; expected parquet or jsonl", field="format")
            db = collector.settings.database  # the SQLite path or the PostgreSQL URI
            if form == "parquet":
                data = await run_in_threadpool(labeled_parquet, db, model=model, since_seconds=since)
                return Response(data, media_type="application/vnd.apache.parquet")
            data = await run_in_threadpool(labeled_jsonl, db, model=model, since_seconds=since)
            return Response(data, media_type="application/x-ndjson")
        except RequestError as exc:
            return _error(exc.status, str(exc), exc.headers)
        except (StoreError, LabeledError) as exc:
            logger.error("labeled data not available: %s", exc)
            return _error(503, f"the collector could not read its store ({exc}); try again later",
                          {"Retry-After": str(collector.settings.retry_after_seconds)})

    return handler
