"""The OpenAPI description of the feedback routes (``home.feedback.routes``), merged into
``home.openapi``'s document."""

from __future__ import annotations

from typing import Any

from .labels import MAX_LABELS


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _retry(description: str) -> dict[str, Any]:
    response = _error(description)
    response["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
    return response


_OUTCOME = {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackResult"}}}


def paths() -> dict[str, Any]:
    """``/v1/feedback`` and ``/v1/labeled``."""
    return {
        "/v1/feedback": {
            "post": {
                "operationId": "postFeedback",
                "summary": "Store ground-truth labels for recorded predictions.",
                "description": (
                    "A device token labels its own device's records; an admin token any device's (device in each "
                    "label). A label per (device, record id) is stored once; the batch is stored entirely or not "
                    "at all. Labels for records not stored yet are accepted and joined when the record arrives."
                ),
                "security": [{"deviceToken": []}, {"adminToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackBatch"}}}},
                "responses": {
                    "200": {"description": "Every label is stored, or was already (duplicates).", "content": _OUTCOME},
                    "400": _error("The body is not valid JSON or gzip."),
                    "401": _error("No bearer token, or one nobody holds."),
                    "408": _error("The body did not arrive in time; nothing stored."),
                    "409": {"description": "Labels conflict with stored ones (listed); nothing stored.", "content": _OUTCOME},
                    "413": _error("The body is too large."),
                    "415": _error("Not JSON, or an unsupported Content-Encoding."),
                    "422": {"description": "A malformed label, or labels that do not fit their record's model (listed); nothing stored.", "content": _OUTCOME},
                    "429": _retry("This token has too many uploads in progress."),
                    "503": _retry("The collector cannot store right now; nothing stored."),
                },
            }
        },
        "/v1/labeled": {
            "get": {
                "operationId": "getLabeled",
                "summary": "A model's records joined with their labels (Parquet or JSON lines).",
                "security": [{"adminToken": []}],
                "parameters": [
                    {"name": "model", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "required": False, "schema": {"type": "string", "examples": ["30d", "24h", "all"]}},
                    {"name": "format", "in": "query", "required": False, "schema": {"enum": ["parquet", "jsonl"]}},
                ],
                "responses": {
                    "200": {"description": "The labeled rows.", "content": {"application/vnd.apache.parquet": {}, "application/x-ndjson": {}}},
                    "401": _error("No bearer token, or one nobody holds."),
                    "403": _error("A device token: labeled fleet data needs an admin token."),
                    "422": _error("A missing model or a bad since/format."),
                    "503": _retry("The store cannot be read right now."),
                },
            }
        },
    }


def schemas() -> dict[str, Any]:
    """``FeedbackBatch`` and ``FeedbackResult``."""
    label = {"type": ["string", "integer", "number", "boolean"], "description": "The truth: a class label or a number."}
    return {
        "FeedbackBatch": {
            "type": "object",
            "additionalProperties": False,
            "required": ["batch_id", "labels"],
            "properties": {
                "batch_id": {"type": "string", "minLength": 1, "maxLength": 128},
                "source": {"enum": ["api", "import"], "description": "Admin tokens only."},
                "labels": {
                    "type": "array",
                    "maxItems": MAX_LABELS,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["record_id", "label"],
                        "properties": {
                            "record_id": {"type": "string", "minLength": 1, "maxLength": 128},
                            "label": label,
                            "ts": {"type": ["number", "null"], "description": "When the truth was observed."},
                            "device": {"type": "string", "description": "Required with an admin token."},
                        },
                    },
                },
            },
        },
        "FeedbackResult": {
            "type": "object",
            "required": ["accepted", "duplicates", "conflicts", "invalid"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "conflicts": {"type": "array", "items": {"type": "object", "properties": {
                    "device": {"type": "string"}, "record_id": {"type": "string"}, "stored": label, "sent": label}}},
                "invalid": {"type": "array", "items": {"type": "object", "properties": {
                    "device": {"type": "string"}, "record_id": {"type": "string"}, "error": {"type": "string"}}}},
                "error": {"type": "string"},
            },
        },
    }
