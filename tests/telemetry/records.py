"""Helpers for telemetry tests: records with a sequence number, read back from SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from telemetry.encoding import unpack, unpack_names

SHA = "ab" * 32


def record(buffer: Any, seq: int, **extra: Any) -> None:
    """Record a small prediction whose input ``seq`` identifies it."""
    buffer.record(
        model="fire-risk",
        version="3",
        bundle_sha256=SHA,
        inputs={"seq": seq, "temp_c": 20.0 + seq % 7, **extra},
        outputs={"prediction": seq % 2, "probabilities": {"0": 0.25, "1": 0.75}},
        flags=["out_of_range:temp_c"] if seq % 5 == 0 else [],
    )


def stored(path: Path) -> list[dict[str, Any]]:
    """Every pending row of a buffer file, read with a separate plain connection."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT r.id, r.uuid, r.ts, c.model, c.version, c.bundle_sha256, c.input_names, r.payload "
            "FROM records AS r JOIN contexts AS c ON c.id = r.context ORDER BY r.id"
        ).fetchall()
    finally:
        connection.close()
    out = []
    for rowid, uid, ts, model, version, sha, names, payload in rows:
        inputs, outputs, flags = unpack(unpack_names(names), payload)
        out.append({"rowid": rowid, "id": uid, "ts": ts, "model": model, "version": version, "bundle_sha256": sha,
                    "inputs": inputs, "outputs": outputs, "flags": list(flags)})
    return out


def seqs(path: Path) -> list[int]:
    return [row["inputs"]["seq"] for row in stored(path)]


def integrity(path: Path) -> str:
    connection = sqlite3.connect(str(path))
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()
