"""Bundle manifests at home, keyed by the sha256 of the ``.edgepkg`` (the ``bundle_sha256``
every record carries): the baselines that drift is measured against.

The table is the shared contract ``bundles(sha256 TEXT PRIMARY KEY, model TEXT, version
TEXT, manifest TEXT, received_at REAL)``, in the collector's own SQLite file. A manifest is
stored once per sha256: the same bytes again are a no-op, other bytes under a known sha256
are refused (``ManifestConflict``), since a sha256 names exactly one bundle.

What can be verified is: a whole bundle is read by ``runtime.read_bundle`` (entry names,
sizes, every file's sha256 against the manifest, and the sha256 is computed here). A bare
``manifest.json`` cannot prove which bundle it belongs to: the caller names the sha256
and the manifest's shape is checked, nothing more (``verified`` is False in the answer).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..stores.sqlite import write_transaction
from ..stores.write_lock import close
from .errors import ManifestConflict, ManifestError, MonitoringError

SHA256 = re.compile(r"[0-9a-f]{64}")
CREATE = """
CREATE TABLE IF NOT EXISTS bundles (
    sha256 TEXT PRIMARY KEY,
    model TEXT,
    version TEXT,
    manifest TEXT,
    received_at REAL
)
"""


@dataclass(frozen=True, kw_only=True)
class StoredManifest:
    """What registering a manifest did."""

    sha256: str
    """The bundle's sha256 (of the whole ``.edgepkg``)."""
    model: str
    """Registry model name, from the manifest."""
    version: str
    """Registry version, from the manifest."""
    created: bool
    """False when exactly this manifest was already stored."""
    verified: bool
    """True when the whole bundle was given and its hashes were checked."""


def connect(db: str | Path, *, timeout_seconds: float = 5.0) -> sqlite3.Connection:
    """A connection to the collector's SQLite file for monitoring (autocommit, busy timeout)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=timeout_seconds, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
    return conn


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def check_manifest(manifest: Any) -> tuple[str, str]:
    """(model, version) of a manifest whose baseline can be used; else ``ManifestError``."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("version"), str):
        raise ManifestError('manifest has no "model" with string "name" and "version"; expected an edgepack manifest.json')
    baseline = manifest.get("baseline")
    if not isinstance(baseline, dict) or not isinstance(baseline.get("features"), dict):
        raise ManifestError('manifest has no "baseline" with "features"; expected a manifest written by edgepack build')
    for name, entry in baseline["features"].items():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "numeric":
            edges, counts = entry.get("edges"), entry.get("counts")
            if not isinstance(edges, list) or not isinstance(counts, list) or (edges and len(edges) != len(counts) + 1):
                raise ManifestError(f"baseline.features[{name!r}]: expected edges (n+1 numbers) and counts (n integers)")
            if any(not _number(e) for e in edges) or edges != sorted(edges):
                raise ManifestError(f"baseline.features[{name!r}].edges must be increasing numbers")
            if any(not _number(c) or c < 0 for c in counts):
                raise ManifestError(f"baseline.features[{name!r}].counts must be non-negative numbers")
        elif kind == "categorical":
            shares = entry.get("frequencies")
            if not isinstance(shares, dict) or any(not _number(v) or v < 0 for v in shares.values()):
                raise ManifestError(f"baseline.features[{name!r}]: expected \"frequencies\" (category -> share, a number >= 0)")
        else:
            raise ManifestError(f"baseline.features[{name!r}].kind is {kind!r}; expected 'numeric' or 'categorical'")
    rows = baseline.get("rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 0):
        raise ManifestError(f"baseline.rows must be a non-negative integer, got {rows!r}")
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict) or outputs.get("task") not in ("classification", "regression"):
        raise ManifestError('manifest "outputs.task" must be "classification" or "regression"')
    return model["name"], model["version"]


def parse_upload(body: bytes, *, sha256: str | None = None) -> tuple[str, bytes, bool]:
    """(sha256, manifest bytes, verified) from a whole ``.edgepkg`` or a bare ``manifest.json``.

    A zip (``PK`` magic) is read and verified by ``runtime.read_bundle``; anything else is
    taken as manifest JSON and needs ``sha256`` (the bundle it belongs to).
    """
    if body[:2] == b"PK":
        from runtime.bundle import read_bundle
        from runtime.errors import BundleError

        try:
            bundle = read_bundle(body)
        except BundleError as exc:
            raise ManifestError(f"the uploaded bundle does not verify: {exc}") from exc
        if sha256 is not None and sha256 != bundle.sha256:
            raise ManifestError(f"sha256={sha256} was given, but the uploaded bundle's sha256 is {bundle.sha256}")
        return bundle.sha256, bundle.manifest_bytes, True
    if sha256 is None:
        raise ManifestError(
            "a bare manifest.json does not say which bundle it belongs to: pass ?sha256=<sha256 of the .edgepkg> "
            "(edgepack inspect shows it), or upload the whole .edgepkg"
        )
    return sha256, body, False


def register_manifest(
    conn_or_db: sqlite3.Connection | str | Path, sha256: str, manifest_bytes: bytes, *, verified: bool = False
) -> StoredManifest:
    """Store ``manifest_bytes`` as the manifest of the bundle ``sha256`` (for releases and uploads).

    Idempotent for the same bytes; ``ManifestConflict`` for different bytes under a stored sha256.
    """
    if not isinstance(sha256, str) or not SHA256.fullmatch(sha256):
        raise ManifestError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON ({exc}); expected the manifest.json of an .edgepkg") from exc
    model, version = check_manifest(manifest)
    text = manifest_bytes.decode("utf-8")
    own = not isinstance(conn_or_db, sqlite3.Connection)
    conn = connect(conn_or_db) if own else conn_or_db  # type: ignore[arg-type]
    try:
        conn.execute(CREATE)
        with write_transaction(conn):
            row = conn.execute("SELECT manifest FROM bundles WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO bundles (sha256, model, version, manifest, received_at) VALUES (?, ?, ?, ?, ?)",
                    (sha256, model, version, text, time.time()),
                )
    finally:
        if own:
            close(conn)
    if row is not None and row[0] != text:
        raise ManifestConflict(
            f"bundle {sha256} already has a different manifest stored; a sha256 names one bundle, so this upload "
            "does not belong to it (check the file, or the sha256 given)"
        )
    return StoredManifest(sha256=sha256, model=model, version=version, created=row is None, verified=verified)


def manifests(conn: sqlite3.Connection, *, model: str | None = None, version: str | None = None) -> dict[str, dict[str, Any]]:
    """Stored manifests by sha256, optionally only those of ``model`` (and ``version``)."""
    conn.execute(CREATE)
    sql, params = "SELECT sha256, manifest FROM bundles", []
    clauses = []
    if model is not None:
        clauses.append("model = ?")
        params.append(model)
    if version is not None:
        clauses.append("version = ?")
        params.append(version)
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return {sha: json.loads(text) for sha, text in conn.execute(sql + " ORDER BY received_at, sha256", params)}


def adopt_released(conn: sqlite3.Connection, bundles_dir: Path, seen: set[str]) -> int:
    """Register the manifest of every bundle published in a release repository that home
    does not know yet (``bundles_dir`` is its ``bundles/``, named ``<sha256>.edgepkg``).

    Each file is read and verified by ``runtime.read_bundle`` once; ``seen`` remembers the
    names already handled, so a call with nothing new costs one directory listing. A
    file that does not verify is logged and skipped, never registered.
    """
    import logging

    from runtime.bundle import read_bundle
    from runtime.errors import BundleError

    try:
        names = [entry.name for entry in os.scandir(bundles_dir) if entry.name.endswith(".edgepkg")]
    except FileNotFoundError:
        return 0
    added = 0
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        sha = name[: -len(".edgepkg")]
        if not SHA256.fullmatch(sha):
            continue
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'bundles'").fetchone() is not None and conn.execute(
            "SELECT 1 FROM bundles WHERE sha256 = ?", (sha,)
        ).fetchone() is not None:
            continue
        try:
            bundle = read_bundle(bundles_dir / name)
        except (BundleError, OSError) as exc:
            logging.getLogger("edgepack.collector").warning("released bundle %s not adopted for monitoring: %s", name, exc)
            continue
        if bundle.sha256 != sha:
            logging.getLogger("edgepack.collector").warning("released bundle %s is named for another sha256 (%s); not adopted", name, bundle.sha256)
            continue
        try:
            register_manifest(conn, sha, bundle.manifest_bytes, verified=True)
        except MonitoringError as exc:
            logging.getLogger("edgepack.collector").warning("released bundle %s not adopted for monitoring: %s", name, exc)
            continue
        added += 1
    return added
