"""The collector's release routes: TUF metadata and targets (read-only), device reports, the fleet.

- ``GET /v1/tuf/metadata/{N.root.json|N.targets.json|N.snapshot.json|timestamp.json}``:
  device or admin token. Answers with an ``ETag`` (the file's sha256) and ``304 Not
  Modified`` to a matching ``If-None-Match``: a device's no-change poll is that one
  conditional request of a few hundred bytes.
- ``GET /v1/tuf/targets/channels/<sha256>.<channel>.edgepkg``: device or admin token; the
  bundle whose sha256 the name carries (one stored copy for every channel), with HTTP
  Range (206) so an interrupted download resumes.
- ``POST /v1/releases/status``: device token; ``{"release": int, "state": one of
  offered|downloaded|active|failed|rolled_back, "reason": str|null, "channel": str|null,
  "bundle_sha256": str|null}``, stored for that token's device only.
- ``GET /v1/releases/fleet``: admin token; what ``edgepack fleet status`` prints.

Files are read fresh from the release directory (cached by inode, mtime and size), so
``edgepack release publish`` on the same machine takes effect on the next poll, without
a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..errors import Forbidden, RequestError
from ..tokens import ADMIN, DEVICE
from .status import MAX_REASON, STATES, StatusStore, fleet_status

logger = logging.getLogger("edgepack.releases")

METADATA_NAME = re.compile(r"(?:[1-9][0-9]{0,9}\.(?:root|targets|snapshot)|timestamp)\.json")
TARGET_NAME = re.compile(r"channels/([0-9a-f]{64})\.[a-z0-9][a-z0-9_-]{0,63}\.edgepkg")
MAX_STATUS_BODY = 8192


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class ReleaseRoutes:
    """Handlers bound to one collector (for its tokens) and one release directory."""

    def __init__(self, collector: Any, releases_dir: Path, db_path: Path) -> None:
        self.collector = collector
        self.root = releases_dir
        self.db_path = db_path
        self.status = StatusStore(db_path)
        self._cache: dict[str, tuple[tuple[int, int, int], bytes, str]] = {}
        self._cache_lock = threading.Lock()

    def _reader(self, request: Request) -> Any:
        return self.collector._identity(request)

    def _file(self, name: str) -> tuple[bytes, str] | None:
        path = self.root / "metadata" / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        with self._cache_lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[name] = (stamp, data, etag)
        return data, etag

    async def metadata(self, request: Request) -> Response:
        try:
            self._reader(request)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        name = request.path_params["name"]
        if not METADATA_NAME.fullmatch(name):
            return _error(404, f"no metadata {name!r}; expected N.root.json, N.targets.json, N.snapshot.json or timestamp.json")
        found = self._file(name)
        if found is None:
            return _error(404, f"{name} does not exist in this release repository")
        data, etag = found
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        return Response(data, media_type="application/json", headers={"etag": etag, "cache-control": "no-cache"})

    async def target(self, request: Request) -> Response:
        try:
            self._reader(request)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        match = TARGET_NAME.fullmatch("channels/" + request.path_params["name"])
        if match is None:
            return _error(404, "no such target; expected channels/<sha256>.<channel>.edgepkg")
        path = self.root / "bundles" / f"{match.group(1)}.edgepkg"
        if not path.is_file():
            return _error(404, f"bundle {match.group(1)[:12]} is not in this release repository")
        return FileResponse(path, media_type="application/octet-stream")

    async def report(self, request: Request) -> Response:
        try:
            identity = self._reader(request)
            if identity.role != DEVICE:
                raise Forbidden("release status is reported with a device's own token, not an admin token")
            body = await request.body()
            if len(body) > MAX_STATUS_BODY:
                return _error(413, f"a status report is at most {MAX_STATUS_BODY} bytes")
            try:
                raw = json.loads(body)
            except ValueError as exc:
                return _error(400, f"body is not JSON ({exc})")
            problem = _check_report(raw)
            if problem:
                return _error(422, problem)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        reason = raw.get("reason")
        await run_in_threadpool(
            self.status.report, identity.name, release=raw["release"], state=raw["state"],
            reason=None if reason is None else str(reason)[:MAX_REASON], channel=raw.get("channel"),
            bundle_sha256=raw.get("bundle_sha256"),
        )
        logger.info("release %s on %s: %s%s", raw["release"], identity.name, raw["state"], f" ({reason})" if reason else "")
        return JSONResponse({"stored": True})

    async def fleet(self, request: Request) -> Response:
        try:
            identity = self._reader(request)
            if identity.role != ADMIN:
                raise Forbidden("the fleet's release status needs an admin token ('edgepack token add --admin NAME')")
        except RequestError as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(await run_in_threadpool(self._fleet))

    def _fleet(self) -> dict[str, Any]:
        from .repository import ReleaseRepository

        history = ReleaseRepository(self.root).history() if (self.root / "metadata" / "1.root.json").exists() else []
        return fleet_status(self.db_path, history)


def _check_report(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return "expected a JSON object {release, state, reason, channel, bundle_sha256}"
    release = raw.get("release")
    if type(release) is not int or release < 0:
        return f"'release' must be an integer >= 0, got {release!r}"
    if raw.get("state") not in STATES:
        return f"'state' must be one of {', '.join(STATES)}, got {raw.get('state')!r}"
    for key in ("reason", "channel", "bundle_sha256"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            return f"'{key}' must be a string or null"
    return None


async def _no_releases(request: Request) -> Response:
    return _error(
        404,
        "this collector serves no releases: a collector on PostgreSQL has no directory to default to; "
        "start it with --releases DIR (the repository of 'edgepack release init')",
    )


def release_routes(collector: Any) -> list[Any]:
    """The routes to append to the collector's list."""
    from starlette.routing import Route

    settings = collector.settings
    paths = ("/v1/tuf/metadata/{name}", "/v1/tuf/targets/channels/{name}", "/v1/releases/status", "/v1/releases/fleet")
    if settings.db_path is not None:
        releases_dir = settings.releases_path or settings.db_path.parent / "releases"
        status_db = settings.db_path
    elif settings.releases_path is not None:
        # A PostgreSQL collector: device reports go to a file beside the releases, which
        # collectors sharing one release directory then share too.
        releases_dir, status_db = settings.releases_path, settings.releases_path / "status.db"
    else:
        return [Route(path, _no_releases, methods=["GET", "POST"]) for path in paths]
    routes = ReleaseRoutes(collector, Path(releases_dir), status_db)
    # The collector's OpenAPI document describes these routes too (a test keeps the two in step).
    collector.spec["paths"].update(_spec())
    return [
        Route("/v1/tuf/metadata/{name}", routes.metadata, methods=["GET"]),
        Route("/v1/tuf/targets/channels/{name}", routes.target, methods=["GET"]),
        Route("/v1/releases/status", routes.report, methods=["POST"]),
        Route("/v1/releases/fleet", routes.fleet, methods=["GET"]),
    ]


def _spec() -> dict[str, Any]:
    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    unauthorized = error("No bearer token, or a token nobody holds.")
    either = [{"deviceToken": []}, {"adminToken": []}]
    return {
        "/v1/tuf/metadata/{name}": {"get": {
            "operationId": "getTufMetadata", "security": either,
            "summary": "TUF metadata of the release repository: N.root.json, N.targets.json, N.snapshot.json or timestamp.json.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The metadata file, with its ETag.", "content": {"application/json": {}}},
                          "304": {"description": "Not modified: the ETag matches."},
                          "401": unauthorized, "404": error("No such metadata file.")},
        }},
        "/v1/tuf/targets/channels/{name}": {"get": {
            "operationId": "getTufTarget", "security": either,
            "summary": "A bundle by its hash-prefixed target name, <sha256>.<channel>.edgepkg; HTTP Range supported.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The bundle.", "content": {"application/octet-stream": {}}},
                          "206": {"description": "The requested range of the bundle."},
                          "401": unauthorized, "404": error("No such bundle."),
                          "416": {"description": "The range is outside the bundle."}},
        }},
        "/v1/releases/status": {"post": {
            "operationId": "postReleaseStatus", "security": [{"deviceToken": []}],
            "summary": "A device reports what it did with a release.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["release", "state"],
                "properties": {"release": {"type": "integer", "minimum": 0}, "state": {"enum": list(STATES)},
                               "reason": {"type": ["string", "null"]}, "channel": {"type": ["string", "null"]},
                               "bundle_sha256": {"type": ["string", "null"]}}}}}},
            "responses": {"200": {"description": "Stored.", "content": {"application/json": {}}},
                          "400": error("Not JSON."), "401": unauthorized, "403": error("An admin token."),
                          "413": error("Over 8 KiB."), "422": error("A field is wrong.")},
        }},
        "/v1/releases/fleet": {"get": {
            "operationId": "getFleet", "security": [{"adminToken": []}],
            "summary": "Per release: devices offered, downloaded, active, failed and rolled back, with reasons.",
            "responses": {"200": {"description": "The fleet's release status.", "content": {"application/json": {}}},
                          "401": unauthorized, "403": error("A device token.")},
        }},
    }
