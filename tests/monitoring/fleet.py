"""A small real fleet for the monitoring tests: a fire-risk bundle built from a real
registry with reference data (so its baseline is that data's distribution), devices that
predict through the real runtime into real buffers, and a real sync into a real collector.

``add_labels`` is the one place that writes ground truth: rows go straight into the
``feedback`` table of the shared contract (its ingest route lives elsewhere); switch it to
``POST /v1/feedback`` once that exists.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.collector import RunningCollector, start_collector
from tests.support.registry import fire_risk_data, fire_risk_pipeline, register_model

FEATURES = ("temp c", "humidity %", "wind.speed", "region")
FEEDBACK_TABLE = """
CREATE TABLE IF NOT EXISTS feedback (
    device TEXT, record_id TEXT, label TEXT, ts REAL, received_at REAL, source TEXT,
    PRIMARY KEY (device, record_id)
)
"""


def build_fire_bundle(root: Path, empty_registry: Path, *, reference_rows: int = 1200) -> tuple[Path, Any]:
    """A fire-risk bundle whose baseline is ``reference_rows`` rows of the training distribution."""
    from packager import build_bundle

    db = root / "mlflow.db"
    shutil.copyfile(empty_registry, db)
    uri = f"sqlite:///{db}"
    X, y = fire_risk_data(rows=reference_rows, seed=11)
    model = fire_risk_pipeline().fit(X, y)
    register_model(uri, "fire-risk", model, X, alias="champion")
    out = root / "fire-risk.edgepkg"
    build_bundle("models:/fire-risk@champion", out, tracking_uri=uri, reference_data=X)
    return out, model


def live_rows(rows: int, seed: int, *, temp_shift: float = 0.0, unseen_share: float = 0.0) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows from the training distribution (another seed), optionally shifted, with their true labels."""
    X, y = fire_risk_data(rows=rows, seed=seed)
    X["temp c"] = X["temp c"] + temp_shift
    if unseen_share:
        rng = np.random.default_rng(seed + 1)
        X.loc[rng.random(rows) < unseen_share, "region"] = "atlantis"
    records = []
    for row in X.to_dict(orient="records"):
        records.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    return records, y


@dataclass
class Fleet:
    collector: RunningCollector
    bundle: Path
    admin_token: str
    admin_token_file: Path
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per device: record id -> true label written into the feedback table."""


def run_device(collector: RunningCollector, device: str, bundle: Path, rows: list[dict[str, Any]], workdir: Path) -> None:
    """Predict ``rows`` on a device with a real buffer, then sync them all to ``collector``."""
    import runtime
    import telemetry

    token = collector.add_device(device) if device != collector.device_id else collector.token
    with telemetry.Buffer(workdir / f"{device}.db") as buffer:
        model = runtime.load(bundle, telemetry=buffer)
        for start in range(0, len(rows), 50):
            model.predict(rows[start : start + 50])
        buffer.flush()
        service = telemetry.SyncService(buffer, collector.url, token=token)
        for _ in range(100):
            service.sync_once()
            if buffer.pending() == 0:
                break
        assert buffer.pending() == 0, "the device could not deliver its records"


def add_labels(db_path: Path, device: str, labels: dict[str, Any]) -> None:
    """Ground truth for ``device``'s records (record id -> label), as the feedback table holds it."""
    import json

    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.execute(FEEDBACK_TABLE)
        now = time.time()
        conn.executemany(
            "INSERT INTO feedback (device, record_id, label, ts, received_at, source) VALUES (?, ?, ?, ?, ?, 'api')",
            [(device, rid, json.dumps(label, sort_keys=True, separators=(",", ":")), now, now) for rid, label in labels.items()],
        )
        conn.commit()
    finally:
        conn.close()


def true_labels(collector: RunningCollector, device: str, rows: list[dict[str, Any]], y: np.ndarray) -> dict[str, Any]:
    """Each stored record's true label, matched on its inputs (the runtime stores validated, float32 values)."""

    def key(inputs: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(None if inputs[f] is None else round(float(np.float32(inputs[f])), 3) if f != "region" else inputs[f] for f in FEATURES)

    truth = {key(row): int(label) for row, label in zip(rows, y)}
    return {record["id"]: truth[key(record["inputs"])] for record in collector.records(device)}


def start_fleet(root: Path, bundle: Path) -> Fleet:
    collector = start_collector(root / "collector")
    token = collector.add_admin("ops")
    token_file = root / "admin.token"
    token_file.write_text(token + "\n")
    return Fleet(collector=collector, bundle=bundle, admin_token=token, admin_token_file=token_file)
