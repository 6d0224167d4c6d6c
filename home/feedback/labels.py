"""Ground truth at home: the ``feedback`` table, and storing a batch of labels in it.

Labels arrive from devices (``POST /v1/feedback`` with a device token: its own records),
from other systems (the same endpoint with an admin token, ``device`` in each label) and
from files (``edgepack feedback import``). They live in the collector's database, next to
``records``, in the table every part of home reads:

    feedback(device, record_id, label /* canonical JSON */, ts, received_at, source,
             PRIMARY KEY (device, record_id))

joined to records on ``records.device = feedback.device AND records.id = feedback.record_id``.

Rules (the same for every source):

- A batch is stored entirely or not at all, in one transaction.
- A label for (device, record id) is stored once. The same label again is a duplicate
  (a resend); a different one is a conflict: the batch is refused (409) and the answer
  names every conflicting record with the label home holds, which is never overwritten.
- A label must fit the record's model, when home has the record: a class label of the
  classifier's type and among its classes, a finite number for a regressor. Otherwise
  the batch is refused (422) naming the label, the model and what it expects.
- A label for a record home does not have (yet) is stored: labels and records travel
  separately (a device sends records first, but an import or another system may be
  ahead of a device that is offline), and the join picks it up once the record arrives.
  Such a label is checked against nothing but its own shape.

This module holds what every store shares: the shape of labels, their fit with the model,
and ``judge``, which applies the rules above to a batch given what the database holds.
The table is created by the versioned migrations (``home.stores.migrations``); storing is done
by ``home.feedback.sqlite`` (a SQLite file) or ``home.feedback.postgres`` (a PostgreSQL
database shared by several collectors), behind the one protocol of ``home.feedback.storage``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import SchemaError
from ..tokens import DEVICE_ID

MAX_LABELS = 10_000
"""Most labels accepted in one batch."""
MAX_RECORD_ID = 128
"""Longest record id accepted."""
MAX_LABEL_TEXT = 1000
"""Longest label, in characters of canonical JSON."""
SOURCES = ("device", "api", "import")
"""Where a label came from, as stored in ``feedback.source``."""

Key = tuple[str, str]
"""(device, record id): what a label is for."""


class LabelIn(NamedTuple):
    """One label as received, checked for shape."""

    device: str
    record_id: str
    label: str
    """Canonical JSON text of the label value."""
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class Conflict:
    """A label that differs from the one home already holds for the same record."""

    device: str
    record_id: str
    stored: Any
    """The label home holds (kept)."""
    sent: Any
    """The label refused."""

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "record_id": self.record_id, "stored": self.stored, "sent": self.sent}


@dataclass(frozen=True, kw_only=True)
class Invalid:
    """A label that does not fit its record's model."""

    device: str
    record_id: str
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "record_id": self.record_id, "error": self.error}


@dataclass(frozen=True, kw_only=True)
class FeedbackOutcome:
    """What storing one batch of labels did."""

    accepted: int = 0
    """Labels stored for the first time (0 when the batch was refused)."""
    duplicates: int = 0
    """Labels home already held, identical (a resend)."""
    conflicts: tuple[Conflict, ...] = field(default_factory=tuple)
    """Labels differing from the stored ones: when any, nothing was stored (409)."""
    invalid: tuple[Invalid, ...] = field(default_factory=tuple)
    """Labels that do not fit their record's model: when any, nothing was stored (422)."""

    @property
    def stored(self) -> bool:
        return not self.conflicts and not self.invalid

    @property
    def status(self) -> int:
        return 200 if self.stored else 409 if self.conflicts else 422

    def message(self) -> str:
        """One sentence naming what refused the batch (for the ``error`` of the answer)."""
        if self.conflicts:
            first = self.conflicts[:3]
            named = "; ".join(f"{c.device}/{c.record_id}: home holds {json.dumps(c.stored)}, sent {json.dumps(c.sent)}" for c in first)
            more = f" and {len(self.conflicts) - len(first)} more" if len(self.conflicts) > len(first) else ""
            return (
                f"{len(self.conflicts)} label(s) conflict with labels already stored ({named}{more}); a stored label is "
                "never overwritten; nothing of this batch was stored: send it again without them"
            )
        if self.invalid:
            first = self.invalid[:3]
            named = "; ".join(f"{i.device}/{i.record_id}: {i.error}" for i in first)
            more = f" and {len(self.invalid) - len(first)} more" if len(self.invalid) > len(first) else ""
            return f"{len(self.invalid)} label(s) do not fit their record's model ({named}{more}); nothing of this batch was stored"
        return ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": [c.as_json() for c in self.conflicts],
            "invalid": [i.as_json() for i in self.invalid],
        }
        if not self.stored:
            body["error"] = self.message()
        return body


# -- shape ------------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """The canonical JSON text of a label value (what ``feedback.label`` holds)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "null" if value is None else type(value).__name__


def check_label(value: Any, where: str) -> str:
    """A label value's canonical text, or ``SchemaError`` saying what labels may be."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError("is not a finite number", field=where)
    if value is None or not isinstance(value, (str, bool, int, float)):
        raise SchemaError(
            f"is {_json_type(value)}; expected a class label (int, str or bool) or a number (regression)", field=where
        )
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise SchemaError("is an integer beyond 64 bits", field=where)
    text = canonical(value)
    if len(text) > MAX_LABEL_TEXT:
        raise SchemaError(f"is {len(text)} characters of JSON; at most {MAX_LABEL_TEXT}", field=where)
    return text


def check_record_id(value: Any, where: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_RECORD_ID or not value.isprintable():
        raise SchemaError(
            f"is {value!r}; expected the record's id (a non-empty str of at most {MAX_RECORD_ID} printable characters)",
            field=where,
        )
    return value


def check_ts(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"is {value!r}; expected Unix seconds (a finite number) or null", field=where)
    return float(value)


def check_device(value: Any, where: str) -> str:
    if type(value) is not str or not DEVICE_ID.fullmatch(value):
        raise SchemaError(
            f"is {value!r}; expected the device id the record came from (as in 'edgepack token add DEVICE_ID')", field=where
        )
    return value


def parse_feedback(document: Any, *, device: str | None, max_labels: int = MAX_LABELS) -> tuple[str, list[LabelIn]]:
    """``(batch_id, labels)`` of a ``POST /v1/feedback`` body, or ``SchemaError`` naming the field.

    ``device`` is the sender's device (a device token: every label is for its own
    records, and a ``device`` field in a label must name it); None for an admin token,
    whose labels must each name their ``device``.
    """
    if not isinstance(document, dict):
        raise SchemaError(f"the body is {_json_type(document)}; expected an object {{\"batch_id\": str, \"labels\": [...]}}")
    unknown = sorted(set(document) - {"batch_id", "labels", "source"})
    if unknown:
        raise SchemaError(f"unknown field(s) {', '.join(unknown)}; expected batch_id, labels (and source)")
    if "source" in document and (device is not None or document["source"] not in ("api", "import")):
        raise SchemaError(
            f"is {document['source']!r}; expected 'api' or 'import' from an admin token (imports and other systems "
            "send labels for any device with an admin token); a device token sends its own labels without a source",
            field="source",
        )
    batch_id = document.get("batch_id")
    if type(batch_id) is not str or not batch_id or len(batch_id) > 128:
        raise SchemaError("expected a non-empty str of at most 128 characters", field="batch_id")
    labels = document.get("labels")
    if not isinstance(labels, list):
        raise SchemaError(f"is {_json_type(labels)}; expected a list of labels", field="labels")
    if len(labels) > max_labels:
        raise SchemaError(f"holds {len(labels)} labels; at most {max_labels} per batch", field="labels")
    out = []
    for i, item in enumerate(labels):
        where = f"labels[{i}]"
        if not isinstance(item, dict):
            raise SchemaError(f"is {_json_type(item)}; expected an object with record_id and label", field=where)
        extra = sorted(set(item) - {"record_id", "label", "ts", "device"})
        if extra:
            raise SchemaError(f"unknown field(s) {', '.join(extra)}; expected record_id, label, ts, device", field=where)
        for key in ("record_id", "label"):
            if key not in item:
                raise SchemaError("is missing", field=f"{where}.{key}")
        if device is None:
            if "device" not in item:
                raise SchemaError("is missing; an admin token sends labels for any device, so each names its device",
                                  field=f"{where}.device")
            owner = check_device(item["device"], f"{where}.device")
        else:
            owner = device
            if "device" in item and item["device"] != device:
                raise SchemaError(
                    f"is {item['device']!r}; a device token sends labels for its own records ({device!r}) only",
                    field=f"{where}.device",
                )
        out.append(LabelIn(owner, check_record_id(item["record_id"], f"{where}.record_id"),
                           check_label(item["label"], f"{where}.label"), check_ts(item.get("ts"), f"{where}.ts")))
    return batch_id, out


# -- fit with the model -----------------------------------------------------------------------


def _class_key(value: Any) -> str:
    """How a class label appears as a key of ``outputs.probabilities`` (JSON object keys)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fit_problem(label: Any, outputs: Any, model: str) -> str | None:
    """Why ``label`` cannot be the truth for a record with ``outputs``, or None if it can."""
    if not isinstance(outputs, dict) or "prediction" not in outputs:
        return None  # nothing known to check against
    prediction = outputs["prediction"]
    probabilities = outputs.get("probabilities")
    classes = list(probabilities) if isinstance(probabilities, dict) else None
    if classes is None and isinstance(prediction, float):
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            return f"label {json.dumps(label)} ({_json_type(label)}) does not fit regression model {model!r}: expected a number"
        return None
    want = _json_type(prediction)
    got = _json_type(label)
    shown = ", ".join(classes) if classes is not None else None
    if want != got:
        expected = f"one of its classes [{shown}] ({want})" if shown is not None else f"a class label of type {want}"
        return f"label {json.dumps(label)} ({got}) does not fit classifier {model!r}: expected {expected}"
    if classes is not None and _class_key(label) not in classes:
        return f"label {json.dumps(label)} is not a class of classifier {model!r}: expected one of [{shown}]"
    return None


# -- the rules, over what the database holds ---------------------------------------------------


def judge(
    labels: list[LabelIn],
    *,
    stored: Callable[[Key], str | None],
    record: Callable[[Key], tuple[str, str | None] | None],
) -> tuple[list[LabelIn], FeedbackOutcome]:
    """The labels to store and the outcome of storing ``labels``, by the module's rules.

    ``stored(key)`` is the label text the database already holds for a key (None: none),
    ``record(key)`` the record's ``(model, outputs JSON text)`` (None: home does not have
    it). Only when the outcome is ``stored`` may the labels returned be written; each key
    appears once among them (the first occurrence in the batch).
    """
    seen: dict[Key, str] = {}
    conflicts: list[Conflict] = []
    invalid: list[Invalid] = []
    new: list[LabelIn] = []
    duplicates = 0
    for item in labels:
        key = (item.device, item.record_id)
        held = seen.get(key)
        if held is None:
            held = stored(key)
        if held is not None:
            if held == item.label:
                duplicates += 1
            else:
                conflicts.append(Conflict(device=item.device, record_id=item.record_id,
                                          stored=json.loads(held), sent=json.loads(item.label)))
            continue
        seen[key] = item.label
        row = record(key)
        if row is not None:
            problem = fit_problem(json.loads(item.label), _loads(row[1]), row[0])
            if problem is not None:
                invalid.append(Invalid(device=item.device, record_id=item.record_id, error=problem))
                continue
        new.append(item)
    if conflicts or invalid:
        return [], FeedbackOutcome(conflicts=tuple(conflicts), invalid=tuple(invalid))
    return new, FeedbackOutcome(accepted=len(new), duplicates=duplicates)


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def __getattr__(name: str) -> Any:
    # The SQLite storage used to live here; its name still works for callers of before.
    if name == "FeedbackStore":
        from .sqlite import FeedbackStore

        return FeedbackStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
