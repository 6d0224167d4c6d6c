"""Helpers for telemetry tests: records with a sequence number, read back from SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from telemetry.chunks import decode
from telemetry.encoding import unpack_names

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


def fill(buffer: Any, count: int, start: int = 0) -> None:
    """Record ``count`` predictions (``record``, seq from ``start``), then flush."""
    for seq in range(start, start + count):
        record(buffer, seq)
    buffer.flush()


def stored(path: Path) -> list[dict[str, Any]]:
    """Every pending record of a buffer file, read from its chunks with a separate plain connection."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT r.id, r.count, r.gone, r.ids, r.ts, c.model, c.version, c.bundle_sha256, c.input_names, r.payload "
            "FROM chunks AS r JOIN contexts AS c ON c.id = r.context ORDER BY r.id"
        ).fetchall()
    finally:
        connection.close()
    out = []
    for rowid, count, gone, ids, ts, model, version, sha, names, payload in rows:
        uids, stamps, records = decode(count, ids, ts, payload)
        keys = unpack_names(names)
        for i in range(gone, count):
            values, outputs, flags = records[i]
            out.append({"rowid": rowid + i, "id": uids[i], "ts": stamps[i], "model": model, "version": version,
                        "bundle_sha256": sha, "inputs": dict(zip(keys, values)), "outputs": outputs, "flags": list(flags)})
    return out


def seqs(path: Path) -> list[int]:
    return [row["inputs"]["seq"] for row in stored(path)]


def integrity(path: Path) -> str:
    connection = sqlite3.connect(str(path))
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()
