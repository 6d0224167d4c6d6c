"""The OpenAPI description of the collector, written by hand to match ``app.py``.

A test compares it with the routes the app really serves and the statuses it really
answers, so keep the two in step.
"""

from __future__ import annotations

from typing import Any

from .feedback import openapi as feedback_spec
from .monitoring.openapi import monitoring_paths
from .body import PACKED_MEDIA_TYPE, ZSTD_MAX_WINDOW
from .schema import COUNTER_KEYS, COUNTER_NAME, INT64_MAX, MAX_COUNTERS
from .settings import CollectorSettings


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _retry_after(description: str) -> dict[str, Any]:
    response = _error(description)
    response["headers"] = {"Retry-After": {"description": "Seconds to wait before sending again.", "schema": {"type": "integer"}}}
    return response


def build_spec(settings: CollectorSettings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a collector running with ``settings``."""
    bearer = [{"deviceToken": []}]
    unauthorized = _error("No bearer token, or a token nobody holds (never issued, rotated or revoked).")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgepack collector",
            "version": "1",
            "description": "Receives prediction records from edgepack devices and stores each record once per device.",
        },
        "paths": {
            "/v1/batches": {
                "post": {
                    "operationId": "postBatch",
                    "summary": "Store a batch of records from the device that holds the token.",
                    "description": (
                        "Records are unique per (device, record id) forever: a replayed batch stores nothing "
                        "and answers accepted 0, duplicates = number of records. A batch is stored entirely or "
                        "not at all. The device id is taken from the token, never from the body."
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "Content-Encoding",
                            "in": "header",
                            "required": False,
                            "description": (
                                "gzip (one member) or zstd (one frame, window at most "
                                f"{ZSTD_MAX_WINDOW} bytes); none for an uncompressed body."
                            ),
                            "schema": {"type": "string", "enum": ["zstd", "gzip", "identity"]},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": (
                            f"At most {settings.max_body_bytes} bytes as sent and {settings.max_decompressed_bytes} "
                            f"bytes once gzip or zstd is undone; at most {settings.max_records} records. JSON (any "
                            f"client) or the MessagePack batch edgepack devices send ({PACKED_MEDIA_TYPE}, described "
                            "by PackedBatch with MessagePack types: str, bin, array, map); both are stored the same "
                            "way, so a record sent in either format and replayed in the other is a duplicate."
                        ),
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}},
                            PACKED_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/PackedBatch"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The batch is stored (durably) or was already stored.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}},
                        },
                        "400": _error(
                            "The body is not valid gzip or zstd (or a zstd frame asks for a larger window), not UTF-8, "
                            "not JSON, not MessagePack, or empty."
                        ),
                        "401": unauthorized,
                        "403": _error("An admin token: admin tokens read the fleet and upload nothing."),
                        "408": _error(
                            f"The body did not arrive within {settings.body_timeout_seconds:g} s of the headers; "
                            "nothing was stored and the connection is closed. Send it again."
                        ),
                        "413": _error("The body is over the size limit as sent, or once decompressed."),
                        "415": _error(
                            f"Content-Encoding other than zstd/gzip/identity, or Content-Type other than "
                            f"application/json or {PACKED_MEDIA_TYPE}. Devices then step down (zstd to gzip, "
                            "MessagePack to JSON)."
                        ),
                        "422": _error(
                            "Valid JSON or MessagePack that does not follow the batch schema (a record count that "
                            "lies: ids, ts and records of a group disagree), or a value that cannot be stored "
                            "exactly (NaN, 1e-400, integers beyond 64 bits); the message names the field."
                        ),
                        "429": _retry_after(
                            f"This device already has {settings.max_pending_per_device} batches, or "
                            f"{settings.max_inflight_bytes_per_device} bytes of batches, in progress; nothing was "
                            "stored, send it again after Retry-After seconds (one batch at a time)."
                        ),
                        "503": _retry_after(
                            f"Busy (more than {settings.max_pending_batches} batches or {settings.max_inflight_bytes} "
                            "bytes of batches in progress over all devices) or the store failed or stayed locked "
                            "(or its disk is full); nothing was stored, send it again after Retry-After seconds."
                        ),
                    },
                }
            },
            "/v1/stats": {
                "get": {
                    "operationId": "getStats",
                    "summary": "Totals of the token's own device, or of the fleet for an admin token.",
                    "description": (
                        "A device token reads only its own device's totals. An admin token (edgepack token add "
                        "--admin NAME) reads the whole fleet's, or one device's with ?device=ID."
                    ),
                    "security": [{"deviceToken": []}, {"adminToken": []}],
                    "parameters": [
                        {
                            "name": "device",
                            "in": "query",
                            "required": False,
                            "description": "Admin tokens: one device's totals. Device tokens: only their own id.",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Totals.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stats"}}},
                        },
                        "401": unauthorized,
                        "403": _error("A device token asking for another device's stats."),
                        "503": _retry_after("The store could not be read; try again after Retry-After seconds."),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness; needs no token.",
                    "responses": {
                        "200": {
                            "description": "The collector is up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"const": "ok"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document.",
                    "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {}}}},
                }
            },
            **feedback_spec.paths(),
            **monitoring_paths(),
        },
        "components": {
            "securitySchemes": {
                "deviceToken": {"type": "http", "scheme": "bearer", "description": "edgepack token add DEVICE_ID"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "edgepack token add --admin NAME"},
            },
            "schemas": {
                **feedback_spec.schemas(),
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "description": "What was wrong and what was expected."}},
                },
                "Record": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "ts", "model", "version", "bundle_sha256", "inputs", "outputs", "flags"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid", "description": "Unique per device forever."},
                        "ts": {"type": "number", "description": "Unix seconds UTC when the prediction was made."},
                        "model": {"type": "string", "minLength": 1, "maxLength": 256},
                        "version": {"type": "string", "minLength": 1, "maxLength": 256},
                        "bundle_sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                        "inputs": {"type": "object"},
                        "outputs": {"type": "object"},
                        "flags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Counters": {
                    "type": "object",
                    "description": (
                        "Cumulative totals since the device's buffer was created; the collector keeps the maximum "
                        "of each. Further counters (e.g. lost: records lost to a damaged buffer) are kept by name."
                    ),
                    "required": ["dropped", "sampled_out", "dead_lettered"],
                    "maxProperties": MAX_COUNTERS,
                    "propertyNames": {"pattern": COUNTER_NAME.pattern},
                    "additionalProperties": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                    "properties": {
                        name: {"type": "integer", "minimum": 0, "maximum": INT64_MAX} for name in COUNTER_KEYS
                    },
                },
                "Batch": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["batch_id", "records"],
                    "properties": {
                        "batch_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "records": {
                            "type": "array",
                            "maxItems": settings.max_records,
                            "items": {"$ref": "#/components/schemas/Record"},
                        },
                        "counters": {"$ref": "#/components/schemas/Counters"},
                    },
                },
                "PackedGroup": {
                    "type": "object",
                    "description": (
                        "Consecutive records of one context. MessagePack map; ids and ts hold one entry per record, "
                        "records one [values, outputs, flags] array per record, values in the order of inputs."
                    ),
                    "additionalProperties": False,
                    "required": ["model", "version", "bundle_sha256", "inputs", "ids", "ts", "records"],
                    "properties": {
                        "model": {"type": "string", "minLength": 1, "maxLength": 256},
                        "version": {"type": "string", "minLength": 1, "maxLength": 256},
                        "bundle_sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                        "inputs": {"type": "array", "items": {"type": "string"}, "description": "Input names, once per group."},
                        "ids": {"type": "string", "description": "The records' UUIDs (36 characters each), concatenated."},
                        "ts": {
                            "type": "string",
                            "format": "binary",
                            "description": "MessagePack bin: the records' unix seconds UTC, little-endian float64, 8 bytes each.",
                        },
                        "records": {
                            "type": "array",
                            "items": {
                                "type": "array",
                                "prefixItems": [
                                    {"type": "array", "description": "Input values, in the order of inputs."},
                                    {"type": "object", "description": "Outputs (keys may be str, int, float, bool or nil)."},
                                    {"type": "array", "items": {"type": "string"}, "description": "Flags."},
                                ],
                                "minItems": 3,
                                "maxItems": 3,
                            },
                        },
                    },
                },
                "PackedBatch": {
                    "type": "object",
                    "description": f"The body of {PACKED_MEDIA_TYPE}: a MessagePack map.",
                    "additionalProperties": False,
                    "required": ["batch_id", "groups"],
                    "properties": {
                        "batch_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "groups": {"type": "array", "items": {"$ref": "#/components/schemas/PackedGroup"},
                                   "description": f"At most {settings.max_records} records over all groups."},
                        "counters": {"anyOf": [{"$ref": "#/components/schemas/Counters"}, {"type": "null"}]},
                    },
                },
                "BatchResult": {
                    "type": "object",
                    "required": ["accepted", "duplicates"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 0, "description": "Records stored for the first time."},
                        "duplicates": {"type": "integer", "minimum": 0, "description": "Records already stored."},
                    },
                },
                "Stats": {
                    "type": "object",
                    "required": ["scope", "device", "records", "devices", "by_model", "dropped", "dead_lettered", "counters"],
                    "properties": {
                        "scope": {"enum": ["device", "fleet"], "description": "Whose totals these are."},
                        "device": {"type": ["string", "null"], "description": "The device, for scope device."},
                        "records": {"type": "integer"},
                        "devices": {"type": "integer"},
                        "by_model": {
                            "type": "object",
                            "description": "Record counts per model name, then per version.",
                            "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
                        },
                        "dropped": {"type": "integer"},
                        "sampled_out": {"type": "integer"},
                        "dead_lettered": {"type": "integer"},
                        "counters": {
                            "type": "object",
                            "description": "Every counter by name (the three above and any further ones), summed over devices.",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                },
            },
        },
    }
