"""The fleet as home sees it: devices, when each was last seen, its records, the counters
it reports (drops, sampling, dead letters, lost, and a backlog when a device sends one),
and which model versions it runs."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

ACTIVE_SECONDS = 24 * 3600
"""A device seen within this long is active."""


def _has(conn: sqlite3.Connection, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def fleet(conn: sqlite3.Connection, *, now: float | None = None) -> dict[str, Any]:
    """``{"devices": [...], "active": n, "records": n}``; counts read by SQL, one row per device."""
    now = time.time() if now is None else now
    if not _has(conn, "devices"):
        return {"devices": [], "active": 0, "records": 0, "active_seconds": ACTIVE_SECONDS}
    devices: dict[str, dict[str, Any]] = {}
    for device, first, last, batches, dropped, sampled, dead in conn.execute(
        "SELECT device, first_seen, last_seen, batches, dropped, sampled_out, dead_lettered FROM devices ORDER BY device"
    ):
        devices[device] = {
            "device": device, "first_seen": first, "last_seen": last, "batches": batches,
            "counters": {"dropped": dropped, "sampled_out": sampled, "dead_lettered": dead},
            "records": 0, "versions": [], "active": now - last <= ACTIVE_SECONDS,
        }
    if _has(conn, "device_counters"):
        for device, name, value in conn.execute("SELECT device, name, value FROM device_counters"):
            if device in devices:
                devices[device]["counters"][name] = value
    if _has(conn, "records"):
        # GROUP BY over the primary key's leading column, then (model, version): no row of JSON is read.
        for device, model, version, count, last_ts in conn.execute(
            "SELECT device, model, version, COUNT(*), MAX(ts) FROM records GROUP BY device, model, version"
        ):
            entry = devices.setdefault(device, {"device": device, "counters": {}, "records": 0, "versions": [], "active": False})
            entry["records"] += count
            entry["versions"].append({"model": model, "version": version, "records": count, "last_ts": last_ts})
    for entry in devices.values():
        entry["backlog"] = entry["counters"].get("pending", entry["counters"].get("backlog"))
    rows = list(devices.values())
    return {
        "devices": rows,
        "active": sum(1 for d in rows if d["active"]),
        "records": sum(d["records"] for d in rows),
        "active_seconds": ACTIVE_SECONDS,
    }
