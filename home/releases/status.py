"""What each device reported about each release, in its own table of the collector's database.

``release_status`` keeps one row per (device, release): the latest state and its reason.
``release_events`` keeps every report, for the history of a device. States, in the order a
device moves through them: ``offered`` (it saw a release it is eligible for), ``downloaded``
(bytes verified against the signed target), ``active`` (installed and switched to),
``failed`` (refused: verification, download, install; the device stayed where it was),
``rolled_back`` (its health gate failed after the switch; it went back to the previous
bundle). Release 0 carries reports about the repository itself (e.g. expired metadata).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..stores.sqlite import write_transaction
from ..stores.write_lock import close

STATES = ("offered", "downloaded", "active", "failed", "rolled_back")
MAX_REASON = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS release_status (
    device TEXT NOT NULL,
    release INTEGER NOT NULL,
    channel TEXT,
    bundle_sha256 TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (device, release)
);
CREATE TABLE IF NOT EXISTS release_events (
    device TEXT NOT NULL,
    release INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    at REAL NOT NULL
);
"""


def _connect(db_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.executescript(_SCHEMA)
    return connection


class StatusStore:
    """Writes device reports; one connection, used under a lock (reports are rare)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = _connect(self.db_path)
        return self._connection

    def report(self, device: str, *, release: int, state: str, reason: str | None, channel: str | None,
               bundle_sha256: str | None) -> None:
        now = time.time()
        with self._lock:
            conn = self._conn()
            with write_transaction(conn):
                conn.execute(
                    "INSERT INTO release_status (device, release, channel, bundle_sha256, state, reason, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, release) DO UPDATE SET "
                    # A repeated state without a reason (a device confirming it still runs a release)
                    # keeps the reason it had ("health gate passed: ...").
                    "reason = CASE WHEN excluded.state = state AND excluded.reason IS NULL THEN reason ELSE excluded.reason END, "
                    "state = excluded.state, updated_at = excluded.updated_at, "
                    "channel = COALESCE(excluded.channel, channel), bundle_sha256 = COALESCE(excluded.bundle_sha256, bundle_sha256)",
                    (device, release, channel, bundle_sha256, state, reason, now),
                )
                conn.execute("INSERT INTO release_events (device, release, state, reason, at) VALUES (?, ?, ?, ?, ?)",
                             (device, release, state, reason, now))

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                close(self._connection)
                self._connection = None


def fleet_status(db_path: str | Path, releases: Sequence[Any] = ()) -> dict[str, Any]:
    """Per release: ``counts`` of devices by their latest state, ``ever``: devices that
    reported each state at least once (the funnel offered -> downloaded -> active), and
    each device's latest state and reason.

    ``releases`` (``Release`` objects from the repository's history) adds the releases no
    device reported on yet, and their channel, model and version."""
    path = Path(db_path)
    rows: list[tuple[Any, ...]] = []
    ever: list[tuple[Any, ...]] = []
    if path.exists():
        conn = _connect(path)
        try:
            rows = conn.execute(
                "SELECT release, device, state, reason, channel, bundle_sha256, updated_at FROM release_status ORDER BY release, device"
            ).fetchall()
            ever = conn.execute(
                "SELECT release, state, COUNT(DISTINCT device) FROM release_events GROUP BY release, state"
            ).fetchall()
        finally:
            conn.close()
    out: dict[int, dict[str, Any]] = {}
    for r in releases:
        out[r.release] = {"release": r.release, "channel": r.channel, "model": r.model, "version": r.version,
                          "bundle_sha256": r.bundle_sha256, "kind": r.kind, "rollout": r.rollout,
                          "counts": dict.fromkeys(STATES, 0), "devices": {}}
    for release, device, state, reason, channel, sha, updated_at in rows:
        entry = out.setdefault(release, {"release": release, "channel": channel, "model": None, "version": None,
                                         "bundle_sha256": sha, "kind": None, "rollout": None,
                                         "counts": dict.fromkeys(STATES, 0), "devices": {}})
        entry["counts"][state] = entry["counts"].get(state, 0) + 1
        entry["devices"][device] = {"state": state, "reason": reason, "updated_at": updated_at}
    for release, state, count in ever:
        if release in out:
            out[release].setdefault("ever", dict.fromkeys(STATES, 0))[state] = count
    for entry in out.values():
        entry.setdefault("ever", dict.fromkeys(STATES, 0))
    return {"releases": [out[k] for k in sorted(out)]}
