"""The monitoring routes' part of the collector's OpenAPI document (merged by ``home.openapi``)."""

from __future__ import annotations

from typing import Any


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def monitoring_paths() -> dict[str, Any]:
    admin = [{"adminToken": []}]
    unauthorized = _error("No bearer token, or a token nobody holds.")
    forbidden = _error("A device token: monitoring reads the whole fleet and needs an admin token.")
    unavailable = _error("The store could not be read or was locked too long; try again after Retry-After seconds.")
    since = {
        "name": "since", "in": "query", "required": False, "schema": {"type": "string", "default": "24h"},
        "description": "Window by record time: 30m, 24h, 7d, 2w or all; resolved to whole hours.",
    }
    return {
        "/v1/bundles": {
            "post": {
                "operationId": "postBundle",
                "summary": "Store a bundle's manifest (its baseline), keyed by the bundle's sha256.",
                "description": (
                    "Body: the .edgepkg (verified: entry names, sizes and every file's sha256 against the manifest), "
                    "or its manifest.json with ?sha256= (stored unverified). The same manifest again answers 200."
                ),
                "security": admin,
                "parameters": [{"name": "sha256", "in": "query", "required": False, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
                "requestBody": {"required": True, "content": {"application/octet-stream": {}, "application/json": {}}},
                "responses": {
                    "200": _json("This manifest was already stored."),
                    "201": _json("Stored: {sha256, model, version, created, verified}."),
                    "400": _error("Empty body."),
                    "401": unauthorized,
                    "403": forbidden,
                    "409": _error("A different manifest is stored under this sha256."),
                    "413": _error("The body is over the upload limit."),
                    "422": _error("Not a bundle that verifies, not a manifest with a baseline, or a bad sha256."),
                    "503": unavailable,
                },
            }
        },
        "/v1/report": {
            "get": {
                "operationId": "getReport",
                "summary": "A model's drift against its baselines, guardrail flag rates and live metrics.",
                "security": admin,
                "parameters": [
                    {"name": "model", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "version", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "device", "in": "query", "required": False, "schema": {"type": "string"}},
                    since,
                ],
                "responses": {
                    "200": _json("The report (see docs/monitoring.md)."),
                    "400": _error("No ?model=, or a window that is not understood."),
                    "401": unauthorized,
                    "403": forbidden,
                    "404": _error("No stored manifest for this model (or version)."),
                    "503": unavailable,
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "getModels",
                "summary": "Models with records or stored manifests, and each manifest's sha256 and version.",
                "security": admin,
                "responses": {"200": _json("{models: {name: [{sha256, version, received_at}]}}"), "401": unauthorized,
                              "403": forbidden, "503": unavailable},
            }
        },
        "/v1/fleet": {
            "get": {
                "operationId": "getFleet",
                "summary": "Devices: last seen, records, reported counters, versions they run.",
                "security": admin,
                "responses": {"200": _json("{devices: [...], active, records}"), "401": unauthorized, "403": forbidden,
                              "503": unavailable},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus text format: records, devices, drift, flag rates, batch latency.",
                "security": admin,
                "responses": {"200": {"description": "Prometheus text exposition 0.0.4.", "content": {"text/plain": {}}},
                              "401": unauthorized, "403": forbidden, "503": unavailable},
            }
        },
        "/dashboard": {
            "get": {
                "operationId": "getDashboard",
                "summary": "The dashboard page (needs no token itself; it asks for an admin token).",
                "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}},
            }
        },
    }
