"""``edgepack feedback import FILE.csv`` into a real collector: by its database and over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import runtime
import telemetry
from telemetry import SyncService
from tests.support.collector import RunningCollector

from .helpers import database, feedback_rows

ROOT = Path(__file__).resolve().parents[2]


def edgepack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _synced_ids(make_bundle, tmp_path: Path, collector: RunningCollector, n: int) -> list[str]:  # noqa: ANN001
    binary = make_bundle("binary")
    with telemetry.Buffer(tmp_path / "p.db") as buffer:
        model = runtime.load(binary.path, telemetry=buffer)
        ids = [model.predict(row)["record_id"] for row in binary.frame.head(n).to_dict("records")]
        with SyncService(buffer, collector.url, token=collector.token) as service:
            assert service.sync_once().stopped == "drained"
    return ids


def test_import_by_database_and_over_http_with_conflicts_listed(make_bundle, tmp_path: Path, collector: RunningCollector) -> None:  # noqa: ANN001
    ids = _synced_ids(make_bundle, tmp_path, collector, 6)
    device = collector.device_id
    first = tmp_path / "first.csv"
    first.write_text("device,record_id,label,ts,comment\n" + "".join(
        f"{device},{rid},{i % 2},{1_700_000_000 + i},row {i}\n" for i, rid in enumerate(ids[:3])
    ))
    done = edgepack("feedback", "import", str(first), "--db", database(collector))
    assert done.returncode == 0, done.stderr
    assert "3 labels read: 3 stored, 0 already stored, 0 refused" in done.stdout
    rows = {r["record_id"]: r for r in feedback_rows(collector)}
    assert {rid: rows[rid]["label"] for rid in ids[:3]} == {ids[0]: "0", ids[1]: "1", ids[2]: "0"}
    assert rows[ids[1]]["ts"] == 1_700_000_001 and {r["source"] for r in rows.values()} == {"import"}

    # Over HTTP with an admin token: one row repeats a stored label, one contradicts it.
    second = tmp_path / "second.csv"
    second.write_text(
        "device,record_id,label\n"
        f"{device},{ids[0]},0\n"          # the same: a duplicate
        f"{device},{ids[1]},0\n"          # home holds 1: refused, kept
        f"{device},{ids[3]},1\n"
        f"{device},{ids[4]},yes\n"        # text, but the model's classes are ints: refused
        f"{device},{ids[5]},0\n"
    )
    token_file = tmp_path / "admin.token"
    token_file.write_text(collector.add_admin("ops") + "\n")
    done = edgepack("feedback", "import", str(second), "--endpoint", collector.url, "--token-file", str(token_file))
    assert done.returncode == 3, done.stderr
    assert "5 labels read: 2 stored, 1 already stored, 2 refused" in done.stdout
    assert f"refused {device}/{ids[1]}: home holds label 1, the file says 0" in done.stderr
    assert f"refused {device}/{ids[4]}: label \"yes\" (str) does not fit classifier 'fire-risk'" in done.stderr
    rows = {r["record_id"]: r["label"] for r in feedback_rows(collector)}
    assert rows == {ids[0]: "0", ids[1]: "1", ids[2]: "0", ids[3]: "1", ids[5]: "0"}

    # A device token may not import for the fleet.
    device_token = tmp_path / "device.token"
    device_token.write_text(collector.token)
    refused = edgepack("feedback", "import", str(second), "--endpoint", collector.url, "--token-file", str(device_token))
    assert refused.returncode == 1 and "from an admin token" in refused.stderr
    assert len(feedback_rows(collector)) == 5


def test_a_file_without_the_columns_is_refused_naming_them(tmp_path: Path, collector: RunningCollector) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,truth\nx,1\n")
    done = edgepack("feedback", "import", str(bad), "--db", database(collector))
    assert done.returncode == 1 and "lacks the column(s) device, record_id, label" in done.stderr
    worse = tmp_path / "worse.csv"
    worse.write_text("device,record_id,label,ts\ndevice-1,abc,1,yesterday\n")
    done = edgepack("feedback", "import", str(worse), "--db", database(collector))
    assert done.returncode == 1 and "line 2: ts: is 'yesterday'" in done.stderr
