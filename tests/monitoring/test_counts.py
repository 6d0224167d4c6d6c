"""Folding records into counts: every record counted exactly once (late manifests,
repeated and chunked catch-ups), bins that agree with numpy's histogram, and drift
statistics that follow their definitions."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from home.errors import StoreError
from home.monitoring import build_report, register_manifest
from home.monitoring.aggregate import catch_up
from home.monitoring.bundles import connect
from home.monitoring.drift import psi
from home.stores.sqlite import Store
from tests.support.locks import write_lock_held

from .records import manifest_of, store_records


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "home.db")
    yield store
    store.close()


def rows_from(values: np.ndarray) -> list[dict]:
    return [{"temp c": float(v), "humidity %": None, "wind.speed": 3.0, "region": "north"} for v in values]


def test_bins_agree_with_numpy_and_every_record_counts_once(store: Store, fire_bundle: Path) -> None:
    manifest = manifest_of(fire_bundle)
    sha = hashlib.sha256(fire_bundle.read_bytes()).hexdigest()
    edges = json.loads(manifest)["baseline"]["features"]["temp c"]["edges"]
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(22, 9, 3000), [edges[0], edges[-1], edges[3]]])  # edges themselves included
    now = time.time()
    store_records(store, "d", sha, rows_from(values[:2000]), ts=now)
    # Records before the manifest is known are folded once it arrives.
    register_manifest(store.path, sha, manifest, verified=True)
    store_records(store, "d", sha, rows_from(values[2000:]), ts=now)
    conn = connect(store.path)
    assert catch_up(conn, chunk_rowids=700) == len(values)  # many small chunks
    assert catch_up(conn) == 0  # nothing new: nothing counted twice
    rep = build_report(conn, "fire-risk", now=now)
    temp = rep["versions"][0]["bundles"][sha]["features"]["temp c"]
    inside, _ = np.histogram(values[(values >= edges[0]) & (values <= edges[-1])], bins=np.asarray(edges))
    assert temp["bins"]["live"] == [int((values < edges[0]).sum()), *inside.tolist(), int((values > edges[-1]).sum())]
    assert temp["count"] == len(values)
    humidity = rep["versions"][0]["bundles"][sha]["features"]["humidity %"]
    assert humidity["missing_rate"] == 1.0 and humidity["status"] == "alert"  # every value missing
    expected = np.concatenate([[0], json.loads(manifest)["baseline"]["features"]["temp c"]["counts"], [0]])
    assert temp["psi"] == pytest.approx(psi(expected, temp["bins"]["live"]))
    conn.close()


def test_window_and_device_select_the_counts(store: Store, fire_bundle: Path) -> None:
    manifest = manifest_of(fire_bundle)
    sha = hashlib.sha256(fire_bundle.read_bytes()).hexdigest()
    register_manifest(store.path, sha, manifest)
    now = time.time()
    store_records(store, "old", sha, rows_from(np.full(50, 20.0)), ts=now - 3 * 86400)
    store_records(store, "new", sha, rows_from(np.full(70, 20.0)), ts=now)
    assert build_report(store.path, "fire-risk", now=now)["versions"][0]["records"] == 70
    assert build_report(store.path, "fire-risk", since_seconds=None, now=now)["versions"][0]["records"] == 120
    assert build_report(store.path, "fire-risk", since_seconds=None, device="old", now=now)["versions"][0]["records"] == 50


def test_psi_follows_its_definition() -> None:
    expected, actual = np.array([50, 30, 20]), np.array([20, 30, 50])
    e, a = expected / 100, actual / 100
    assert psi(expected, actual) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert psi(expected, expected) == 0.0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m["baseline"]["features"]["temp c"].update(counts=["a"] * 10), "counts must be non-negative numbers"),
        (lambda m: m["baseline"]["features"]["temp c"].update(edges=list(reversed(m["baseline"]["features"]["temp c"]["edges"]))), "increasing"),
        (lambda m: m["baseline"]["features"]["region"].update(frequencies={"north": "lots"}), "a number >= 0"),
        (lambda m: m["baseline"].update(rows=-1), "baseline.rows"),
        (lambda m: m["outputs"].update(task="ranking"), "outputs.task"),
    ],
)
def test_manifests_with_unusable_baselines_are_refused_by_name(tmp_path: Path, fire_bundle: Path, change, named: str) -> None:
    from home.monitoring import ManifestError

    manifest = json.loads(manifest_of(fire_bundle))
    change(manifest)
    with pytest.raises(ManifestError, match=named):
        register_manifest(tmp_path / "home.db", "ab" * 32, json.dumps(manifest).encode())


def test_the_fold_takes_the_files_write_lock_and_waits_at_most_its_timeout(store: Store, fire_bundle: Path) -> None:
    manifest = manifest_of(fire_bundle)
    sha = hashlib.sha256(fire_bundle.read_bytes()).hexdigest()
    register_manifest(store.path, sha, manifest)
    store_records(store, "d", sha, rows_from(np.full(30, 20.0)), ts=time.time())
    conn = connect(store.path, timeout_seconds=0.3)
    try:
        with write_lock_held(store.path):
            with pytest.raises(StoreError, match="home.db-lock was held by another edgepack process"):
                catch_up(conn)
            with pytest.raises(StoreError, match="home.db-lock was held"):
                register_manifest(conn, "cd" * 32, manifest)
        assert catch_up(conn) == 30  # nothing was counted while it waited
    finally:
        conn.close()
