"""A registry whose champion learnt from shuffled labels, a bundle built from it, and a
device that predicted with it and later got the truth for every prediction, synced."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import runtime
import telemetry
from packager import build_bundle
from telemetry import SyncService
from tests.support.collector import RunningCollector
from tests.support.registry import fire_risk_data, fire_risk_pipeline, register_model

NAME = "fire-risk"


@dataclass
class Field:
    champion: Any
    challenger: Any
    v1: str
    v2: str | None
    live: Any
    y_live: Any
    bundle: Any


def labeled_field(tracking_uri: str, tmp_path: Path, collector: RunningCollector, *, challenger: bool = True) -> Field:
    X, y = fire_risk_data(rows=600, seed=11)
    train, live, y_train, y_live = X.iloc[:300], X.iloc[300:], y[:300], y[300:]
    champion = fire_risk_pipeline().fit(train, np.random.default_rng(0).permutation(y_train))
    better = fire_risk_pipeline().fit(train, y_train)
    v1 = register_model(tracking_uri, NAME, champion, train, alias="champion")
    v2 = register_model(tracking_uri, NAME, better, train) if challenger else None
    report = build_bundle(f"models:/{NAME}@champion", tmp_path / "fire.edgepkg", tracking_uri=tracking_uri)
    with telemetry.Buffer(tmp_path / "device.db") as buffer:
        model = runtime.load(report.path, telemetry=buffer)
        results = model.predict(live.to_dict("records"))
        for result, truth in zip(results, y_live):
            buffer.feedback(result["record_id"], int(truth))
        with SyncService(buffer, collector.url, token=collector.token) as service:
            assert service.sync_once().stopped == "drained"
            assert service.last_feedback.accepted == len(live)
    return Field(champion=champion, challenger=better, v1=v1, v2=v2, live=live, y_live=y_live, bundle=report)
