"""Labels from a CSV file into the collector: straight into its database, or over HTTP.

The file has a header row with the columns ``device``, ``record_id``, ``label`` and
optionally ``ts`` (Unix seconds; empty for unknown); other columns are ignored. A label
cell is read as JSON when it is a JSON number, ``true``/``false`` or a quoted string
(``1`` is the int 1, ``"1"`` the string "1") and as text otherwise (``yes`` is "yes").

``import_labels`` sends the labels in batches; home stores a batch entirely or not at
all (``home.feedback.labels``), so labels it refuses (a conflict with a stored label, a label
that does not fit its record's model) are taken out of the batch, reported, and the rest
is sent again. Nothing already stored is changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HomeError, SchemaError
from .labels import Conflict, Invalid, LabelIn, check_device, check_label, check_record_id, check_ts
from .storage import open_feedback

REQUIRED = ("device", "record_id", "label")


class FeedbackImportError(HomeError):
    """The file cannot be read as labels, or the collector refused the import as a whole."""


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    """What an import did."""

    rows: int
    """Labels read from the file."""
    accepted: int = 0
    """Labels stored for the first time."""
    duplicates: int = 0
    """Labels home already held, identical."""
    conflicts: tuple[Conflict, ...] = field(default_factory=tuple)
    """Labels refused: home holds a different label for the record (kept)."""
    invalid: tuple[Invalid, ...] = field(default_factory=tuple)
    """Labels refused: they do not fit their record's model."""


def _cell_label(text: str) -> Any:
    stripped = text.strip()
    if stripped in ("true", "false") or stripped.startswith('"'):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    try:
        value = json.loads(stripped)
    except ValueError:
        return text
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def read_labels(path: str | Path) -> list[LabelIn]:
    """The labels of a CSV file, checked for shape; ``FeedbackImportError`` names the line."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise FeedbackImportError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise FeedbackImportError(
                f"{path} lacks the column(s) {', '.join(missing)}; expected a header row with device, record_id, label[, ts]"
            )
        out = []
        try:
            for row in reader:
                line = reader.line_num
                try:
                    ts_text = (row.get("ts") or "").strip()
                    ts: Any = None
                    if ts_text:
                        try:
                            ts = float(ts_text)
                        except ValueError:
                            ts = ts_text  # refused just below, with the field named
                    out.append(LabelIn(
                        check_device(row["device"], "device"), check_record_id(row["record_id"], "record_id"),
                        check_label(_cell_label(row["label"] or ""), "label"), check_ts(ts, "ts"),
                    ))
                except SchemaError as exc:
                    raise FeedbackImportError(f"{path}, line {line}: {exc}") from None
        except csv.Error as exc:
            raise FeedbackImportError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from exc
    return out


def import_labels(
    path: str | Path, *, db: str | Path | None = None, endpoint: str | None = None, token: str | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Import the labels of ``path`` into the database ``db`` (a SQLite file, or a
    ``postgresql://`` URI) or through ``endpoint``
    (``POST /v1/feedback`` with an admin ``token``)."""
    if (db is None) == (endpoint is None):
        raise FeedbackImportError("give either the collector's database (--db) or its URL (--endpoint), not both")
    labels = read_labels(path)
    accepted = duplicates = 0
    conflicts: list[Conflict] = []
    invalid: list[Invalid] = []
    send = _sender(db, endpoint, token)
    try:
        for start in range(0, len(labels), batch_size):
            batch = labels[start : start + batch_size]
            while batch:
                got = send(batch)
                if not got["conflicts"] and not got["invalid"]:
                    accepted += got["accepted"]
                    duplicates += got["duplicates"]
                    break
                refused = {(c.device, c.record_id) for c in got["conflicts"]} | {(i.device, i.record_id) for i in got["invalid"]}
                conflicts += got["conflicts"]
                invalid += got["invalid"]
                kept = [item for item in batch if (item.device, item.record_id) not in refused]
                if len(kept) == len(batch):
                    raise FeedbackImportError("the collector refused a batch without naming the labels at fault")
                batch = kept
    finally:
        close = getattr(send, "close", None)
        if close is not None:
            close()
    return ImportReport(rows=len(labels), accepted=accepted, duplicates=duplicates,
                        conflicts=tuple(conflicts), invalid=tuple(invalid))


class _DbSender:
    def __init__(self, db: str | Path) -> None:
        self.store = open_feedback(db, create=False)

    def __call__(self, batch: list[LabelIn]) -> dict[str, Any]:
        outcome = self.store.ingest(batch, received_at=time.time(), source="import")
        return {"accepted": outcome.accepted, "duplicates": outcome.duplicates,
                "conflicts": list(outcome.conflicts), "invalid": list(outcome.invalid)}

    def close(self) -> None:
        self.store.close()


class _HttpSender:
    def __init__(self, endpoint: str, token: str) -> None:
        import httpx

        self.url = endpoint.rstrip("/") + "/v1/feedback"
        self.client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.httpx = httpx

    def __call__(self, batch: list[LabelIn]) -> dict[str, Any]:
        items = [{"device": i.device, "record_id": i.record_id, "label": json.loads(i.label), "ts": i.ts} for i in batch]
        batch_id = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        try:
            answer = self.client.post(self.url, json={"batch_id": batch_id, "labels": items, "source": "import"})
        except self.httpx.HTTPError as exc:
            raise FeedbackImportError(f"cannot reach {self.url}: {exc}") from exc
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code not in (200, 409, 422) or (answer.status_code == 422 and not body.get("invalid")):
            raise FeedbackImportError(
                f"the collector answered {answer.status_code} to POST {self.url}: {body.get('error', answer.text[:200])}"
                + (" (labels for any device need an admin token: 'edgepack token add --admin NAME')"
                   if answer.status_code in (401, 403) else "")
            )
        return {
            "accepted": int(body.get("accepted", 0)), "duplicates": int(body.get("duplicates", 0)),
            "conflicts": [Conflict(**c) for c in body.get("conflicts", [])],
            "invalid": [Invalid(**i) for i in body.get("invalid", [])],
        }

    def close(self) -> None:
        self.client.close()


def _sender(db: str | Path | None, endpoint: str | None, token: str | None) -> Any:
    if db is not None:
        return _DbSender(db)
    if not token:
        raise FeedbackImportError("--endpoint needs an admin token (--token-file)")
    return _HttpSender(endpoint, token)  # type: ignore[arg-type]
