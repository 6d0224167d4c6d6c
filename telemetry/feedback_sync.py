"""Sending queued labels home: ``POST /v1/feedback``, exactly once, after the records.

The sync service runs this step at the end of a round that drained the records, so a
label usually arrives after the record it labels (the collector accepts it either way).
Each batch holds the oldest queued labels; its ``batch_id`` is the SHA-256 of its record
ids and labels, so a resend after a crash carries the same id. Labels are deleted here
only after the collector answered 200 (every label stored, or already stored: a resend);
a crash in between sends them again and the collector counts them as duplicates.

The collector stores a batch entirely or not at all. What each answer does:

* 200 ``{"accepted", "duplicates"}``: delete the batch's labels.
* 409 ``{"conflicts": [{"record_id", "stored", "sent"}, ...]}``: home already holds a
  different label for those records. They move to ``feedback_refused`` (never resent),
  the rest of the batch is sent again.
* 422 ``{"invalid": [{"record_id", "error"}, ...]}``: those labels do not fit their
  record's model (or are malformed); same treatment. A 400/422 naming no label moves the
  whole batch.
* 413: the batch is sent again in halves.
* 401 / 403: stop, keep everything (token problem). 404 / 405: the collector is older than
  feedback; keep everything, log it, records still sync.
* 5xx, 408, 425, 429, timeouts: keep everything; the round ends ``unavailable`` and the
  sync service backs off as it does for records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from . import crashpoint
from .encoding import to_json_bytes
from .feedback import Label, delete_labels, oldest_labels, refuse_labels
from .request import send

if TYPE_CHECKING:
    from .sync import SyncService

log = logging.getLogger("telemetry.sync")

BATCH_LABELS = 1000
"""Most labels per ``POST /v1/feedback`` (the collector takes up to 10,000)."""

FeedbackStop = Literal["drained", "stop_requested", "unavailable", "unauthorized", "unsupported"]


@dataclass(frozen=True, kw_only=True)
class FeedbackResult:
    """What one feedback step of a sync round did (``SyncService.last_feedback``)."""

    stopped: FeedbackStop
    """``drained`` (no label left), ``stop_requested``, ``unavailable`` (collector down:
    kept for the next round), ``unauthorized`` (401/403), ``unsupported`` (the collector
    has no ``/v1/feedback``: kept)."""
    batches: int = 0
    """Batches the collector stored."""
    accepted: int = 0
    """Labels stored at home for the first time."""
    duplicates: int = 0
    """Labels home already had (a resend)."""
    refused: int = 0
    """Labels moved to ``feedback_refused`` (conflicting or not fitting the model)."""
    error: str | None = None
    """What went wrong, when ``stopped`` is not ``drained``/``stop_requested``."""


def batch_id_of(labels: list[Label]) -> str:
    """SHA-256 over the batch's (record id, label) pairs, sorted: the same on a resend."""
    digest = hashlib.sha256()
    for record_id, label in sorted((item.record_id, item.label) for item in labels):
        digest.update(record_id.encode() + b"\x00" + label.encode() + b"\x01")
    return digest.hexdigest()


def _body(batch_id: str, labels: list[Label]) -> bytes:
    items = [{"record_id": item.record_id, "label": json.loads(item.label), "ts": item.ts} for item in labels]
    return to_json_bytes({"batch_id": batch_id, "labels": items})


def _named(body: object, key: str) -> dict[str, str]:
    """record id -> reason for the labels an answer names under ``key``."""
    out: dict[str, str] = {}
    entries = body.get(key) if isinstance(body, dict) else None
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("record_id"), str):
                if key == "conflicts":
                    reason = f"home holds label {entry.get('stored')!r} for this record, not {entry.get('sent')!r}"
                else:
                    reason = str(entry.get("error", "refused"))
                out[entry["record_id"]] = reason
    return out


class FeedbackUploader:
    """The feedback step of a ``SyncService`` (uses its buffer, client, URL and token)."""

    def __init__(self, service: SyncService) -> None:
        self._service = service
        self.url = service.endpoint + "/v1/feedback"

    def send(self, stop_event: threading.Event) -> FeedbackResult:
        """Send queued labels until none is left or something stops it."""
        service = self._service
        buffer = service.buffer
        batches = accepted = duplicates = refused = 0
        limit = BATCH_LABELS

        def result(stopped: FeedbackStop, error: str | None = None) -> FeedbackResult:
            return FeedbackResult(stopped=stopped, batches=batches, accepted=accepted, duplicates=duplicates,
                                  refused=refused, error=error)

        while True:
            if stop_event.is_set():
                return result("stop_requested")
            labels = oldest_labels(buffer, limit)
            if not labels:
                return result("drained")
            batch_id = batch_id_of(labels)
            headers = {**service._headers, "Content-Type": "application/json"}
            answer = send(service._client, self.url, _body(batch_id, labels), headers,
                          deadline=service.options.request_deadline, clock=service._clock).answer()
            status = answer.status
            if status == 200:
                crashpoint.reach("after_feedback_response")
                delete_labels(buffer, [item.rowid for item in labels])
                body = answer.body if isinstance(answer.body, dict) else {}
                got_accepted, got_duplicates = body.get("accepted"), body.get("duplicates")
                if not isinstance(got_accepted, int) or not isinstance(got_duplicates, int):
                    got_accepted, got_duplicates = len(labels), 0
                batches += 1
                accepted += got_accepted
                duplicates += got_duplicates
                log.info("feedback batch %s: %d labels, %d accepted, %d duplicates", batch_id[:12], len(labels),
                         got_accepted, got_duplicates)
                limit = BATCH_LABELS
                continue
            if status in (400, 409, 422):
                named = _named(answer.body, "conflicts" if status == 409 else "invalid")
                by_id = {item.record_id: item for item in labels}
                chosen = [by_id[rid] for rid in named if rid in by_id]
                if not chosen:  # the answer names no label: the batch as a whole is refused
                    chosen = labels
                    named = {item.record_id: f"{status}: {answer.problem}" for item in labels}
                moved = refuse_labels(buffer, [item.rowid for item in chosen], status=status,
                                      reasons={item.rowid: named.get(item.record_id, "") for item in chosen})
                refused += moved
                log.error("feedback batch %s: collector refused %d label(s) (%d: %s); kept in feedback_refused",
                          batch_id[:12], moved, status, answer.problem)
                continue
            if status == 413 and limit > 1:
                limit = max(1, len(labels) // 2)
                continue
            if status in (401, 403):
                return result("unauthorized", f"the collector at {service.endpoint} refused this device's token for "
                              f"feedback ({status}: {answer.problem}); labels are kept")
            if status in (404, 405):
                log.error("the collector at %s has no POST /v1/feedback (%d); %d label(s) kept until it does",
                          service.endpoint, status, len(labels))
                return result("unsupported", f"the collector at {service.endpoint} does not take feedback ({status}); "
                              "labels are kept: upgrade the collector")
            what = answer.problem if status is None else f"{status}: {answer.problem}"
            return result("unavailable", f"the collector at {service.endpoint} did not store the labels ({what}); "
                          "they are kept for the next round")
