"""One fleet for the monitoring tests (module scope): a bundle built with reference data,
three devices' predictions synced into a real collector, and labels for two of them.

- ``steady``: rows from the training distribution;
- ``hot``: the same, with ``temp c`` shifted by +12 degrees (only that feature moves);
- ``odd``: the training distribution with 10% of ``region`` values never seen in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .fleet import Fleet, add_labels, build_fire_bundle, live_rows, run_device, start_fleet, true_labels


@pytest.fixture(scope="session")
def fire_bundle(tmp_path_factory: pytest.TempPathFactory, _empty_registry_db: Path) -> Path:
    return build_fire_bundle(tmp_path_factory.mktemp("monitor-bundle"), _empty_registry_db)[0]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, fire_bundle: Path) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("monitor-fleet")
    fleet = start_fleet(root, fire_bundle)
    try:
        upload = httpx.post(
            f"{fleet.collector.url}/v1/bundles", content=fire_bundle.read_bytes(),
            headers={"Authorization": f"Bearer {fleet.admin_token}"}, timeout=30,
        )
        assert upload.status_code == 201, upload.text
        plans = {
            "steady": live_rows(800, seed=21),
            "hot": live_rows(800, seed=22, temp_shift=12.0),
            "odd": live_rows(800, seed=23, unseen_share=0.10),
        }
        for device, (rows, _) in plans.items():
            run_device(fleet.collector, device, fire_bundle, rows, root)
        for device in ("steady", "hot"):
            rows, y = plans[device]
            fleet.labels[device] = true_labels(fleet.collector, device, rows, y)
            add_labels(fleet.collector.db_path, device, fleet.labels[device])
        yield fleet
    finally:
        if fleet.collector.running:
            fleet.collector.stop()
