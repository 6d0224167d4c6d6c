"""The monitoring routes of a real collector: manifest uploads and their refusals,
/metrics in Prometheus text format, the fleet view, and who may read them."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .fleet import Fleet


def admin(fleet: Fleet) -> dict[str, str]:
    return {"Authorization": f"Bearer {fleet.admin_token}"}


def metrics(fleet: Fleet) -> dict[str, list]:
    answer = httpx.get(f"{fleet.collector.url}/metrics", headers=admin(fleet), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def test_metrics_show_records_devices_drift_flags_and_batch_latency(fleet: Fleet) -> None:
    families = metrics(fleet)
    (total,) = families["edgepack_records_stored_total"]
    assert total.value == 2400
    assert [(s.labels, s.value) for s in families["edgepack_records_stored"]] == [({"model": "fire-risk", "version": "1"}, 2400)]
    assert families["edgepack_active_devices"][0].value == 3 and families["edgepack_devices"][0].value == 3
    psi = {s.labels["feature"]: s.value for s in families["edgepack_drift_psi"]}
    assert set(psi) == {"temp c", "humidity %", "wind.speed", "region", "(prediction)"}
    assert psi["temp c"] > 0.25  # the hot device's shift shows fleet-wide
    assert families["edgepack_drift_status"][0].value == 2  # alert
    flags = {s.labels["flag"]: s.value for s in families["edgepack_flag_rate"]}
    assert 0.01 < flags["unseen_category:region"] < 0.06  # 10% of one device's records in three
    live = {s.labels["metric"]: s.value for s in families["edgepack_live_metric"]}
    assert set(live) == {"accuracy", "roc_auc"} and 0.5 < live["accuracy"] <= 1.0
    assert families["edgepack_labeled_records"][0].value == 1600
    latency = {s.name: s for s in families["edgepack_batch_seconds"] if s.labels.get("status") == "200"}
    assert latency["edgepack_batch_seconds_count"].value >= 3  # every device synced at least one batch
    assert latency["edgepack_batch_seconds_sum"].value > 0


def test_monitoring_needs_an_admin_token(fleet: Fleet) -> None:
    for path in ("/metrics", "/v1/report?model=fire-risk", "/v1/fleet", "/v1/models"):
        anonymous = httpx.get(fleet.collector.url + path, timeout=10)
        assert anonymous.status_code == 401, path
        device = httpx.get(fleet.collector.url + path, headers={"Authorization": f"Bearer {fleet.collector.token}"}, timeout=10)
        assert device.status_code == 403 and "admin token" in device.json()["error"], path
    upload = httpx.post(f"{fleet.collector.url}/v1/bundles", content=fleet.bundle.read_bytes(),
                        headers={"Authorization": f"Bearer {fleet.collector.token}"}, timeout=30)
    assert upload.status_code == 403


def test_fleet_lists_devices_records_counters_and_versions(fleet: Fleet) -> None:
    answer = httpx.get(f"{fleet.collector.url}/v1/fleet", headers=admin(fleet), timeout=10).json()
    devices = {d["device"]: d for d in answer["devices"]}
    assert {"steady", "hot", "odd"} <= set(devices)
    for name in ("steady", "hot", "odd"):
        assert devices[name]["records"] == 800 and devices[name]["active"]
        assert devices[name]["versions"] == [{"model": "fire-risk", "version": "1", "records": 800,
                                              "last_ts": pytest.approx(devices[name]["versions"][0]["last_ts"])}]
        assert devices[name]["counters"]["dropped"] == 0


def _post(fleet: Fleet, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{fleet.collector.url}/v1/bundles", content=body, params=params, headers=admin(fleet), timeout=30)


def test_manifest_uploads_are_verified_idempotent_and_refused_when_wrong(fleet: Fleet, tmp_path: Path) -> None:
    data = fleet.bundle.read_bytes()
    again = _post(fleet, data)
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["verified"] is True

    # A bundle whose model.onnx no longer matches its manifest's hash.
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            payload = source.read(info)
            target.writestr(info, payload + b"\0" if info.filename == "model.onnx" else payload)
    tampered = _post(fleet, out.getvalue())
    assert tampered.status_code == 422 and "model.onnx" in tampered.json()["error"]

    manifest = source.read("manifest.json")
    bare = _post(fleet, manifest)
    assert bare.status_code == 422 and "?sha256=" in bare.json()["error"]
    other_sha = "ab" * 32
    stored = _post(fleet, manifest, sha256=other_sha)
    assert stored.status_code == 201 and stored.json() == {
        "sha256": other_sha, "model": "fire-risk", "version": "1", "created": True, "verified": False,
    }
    changed = json.loads(manifest)
    changed["baseline"]["rows"] += 1
    conflict = _post(fleet, json.dumps(changed, sort_keys=True).encode(), sha256=other_sha)
    assert conflict.status_code == 409 and "different manifest" in conflict.json()["error"]
    no_baseline = _post(fleet, b'{"model": {"name": "x", "version": "1"}}', sha256="cd" * 32)
    assert no_baseline.status_code == 422 and "baseline" in no_baseline.json()["error"]
    garbage = _post(fleet, b"PK\x03\x04 not really a zip")
    assert garbage.status_code == 422 and "does not verify" in garbage.json()["error"]
    bad_sha = _post(fleet, manifest, sha256="XYZ")
    assert bad_sha.status_code == 422 and "64 lowercase hex" in bad_sha.json()["error"]
    models = httpx.get(f"{fleet.collector.url}/v1/models", headers=admin(fleet), timeout=10).json()["models"]
    assert sorted(entry["sha256"] for entry in models["fire-risk"]) == sorted([other_sha, _sha(data)])


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
