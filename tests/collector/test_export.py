"""``edgepack export --format parquet`` against both stores: read back with DuckDB and
pyarrow.dataset, incremental runs, kill -9 at every step of a run, and retention."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from home.export.runs import CRASH_ENV, delete_exported
from tests.support.collector import ROOT, RunningCollector

from .batches import batch, post

DAY = 86_400.0
BASE_TS = 1_790_000_000.25  # 2026-09-21


def _edgepack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepack", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, **(env or {})},
    )


def _db(collector: RunningCollector) -> str:
    return collector.db_url or str(collector.db_path)


def _export(collector: RunningCollector, to: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _edgepack("export", "--db", _db(collector), "--to", str(to), "--format", "parquet", "--json", *extra, env=env)


def _execute(collector: RunningCollector, sql: str, params: tuple[Any, ...] = ()) -> None:
    if collector.db_url is not None:
        import psycopg

        with psycopg.connect(collector.db_url, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), params)
    else:
        with sqlite3.connect(collector.db_path) as conn:
            conn.execute(sql, params)
        conn.close()


def _fill(collector: RunningCollector, tokens: dict[str, str], *, start: int, batches: int) -> None:
    """Batches over two devices, two models, two versions and three days."""
    for number in range(start, start + batches):
        device = sorted(tokens)[number % len(tokens)]
        document = batch(
            40,
            model="fire-risk" if number % 3 else "pump-wear",
            version=str(1 + number % 2),
            ts=BASE_TS + DAY * (number % 3) + number,
        )
        for index, record in enumerate(document["records"]):
            record["inputs"] = {"temp_c": number + index / 100, "region": ["north", "south"][index % 2]}
            record["flags"] = ["sampled"] if index % 5 == 0 else []
        assert post(collector.url, tokens[device], document).status_code == 200


def _duckdb_rows(to: Path) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        cursor = con.execute(
            f"SELECT device, id, model, CAST(version AS VARCHAR) AS version, CAST(date AS VARCHAR) AS date, "
            f"epoch_us(ts) AS ts_us, inputs, outputs, flags FROM read_parquet('{to}/**/*.parquet', hive_partitioning = true)"
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


@pytest.fixture
def fleet(collector: RunningCollector) -> tuple[RunningCollector, dict[str, str]]:
    return collector, {collector.device_id: collector.token, "device-2": collector.add_device("device-2")}


def test_export_is_read_back_by_duckdb_and_pyarrow_with_the_collectors_counts_and_values(
    fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path
) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=12)
    to = tmp_path / "lake"

    result = _export(collector, to)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    stored = collector.records()
    assert report["records"] == len(stored) == 480

    rows = _duckdb_rows(to)
    assert len(rows) == len(stored)
    by_key = {(row["device"], row["id"]): row for row in rows}
    assert len(by_key) == len(rows)  # each record once
    for record in stored:
        row = by_key[(record["device"], record["id"])]
        assert row["model"] == record["model"] and row["version"] == record["version"]
        assert row["ts_us"] == round(record["ts"] * 1e6)
        assert row["date"] == datetime.fromtimestamp(record["ts"], timezone.utc).date().isoformat()
        assert json.loads(row["inputs"]) == record["inputs"]
        assert json.loads(row["outputs"]) == record["outputs"]
        assert list(row["flags"]) == record["flags"]
    # The collector's own counts, per model version, agree with the files'.
    admin = collector.add_admin()
    assert dict(Counter((row["model"], row["version"]) for row in rows)) == {
        (model, version): count for model, versions in collector.stats(admin)["by_model"].items() for version, count in versions.items()
    }

    dataset = ds.dataset(to, format="parquet", partitioning="hive")
    data = dataset.to_table()
    assert data.num_rows == len(stored)
    assert str(dataset.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(dataset.schema.field("received_at").type) == "timestamp[us, tz=UTC]"
    assert str(dataset.schema.field("flags").type) == "list<element: string>"
    fire_v2 = dataset.to_table(filter=(ds.field("model") == "fire-risk") & (ds.field("version") == 2))
    assert fire_v2.num_rows == sum(1 for r in stored if r["model"] == "fire-risk" and r["version"] == "2") > 0
    # Spark's layout: one directory per partition value, the values out of the files.
    assert sorted(p.name for p in to.iterdir()) == ["model=fire-risk", "model=pump-wear"]
    assert not {"model", "version", "date"} & set(pq.read_schema(dataset.files[0]).names)


def test_a_second_export_writes_only_the_new_records(fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=4)
    to = tmp_path / "lake"
    assert json.loads(_export(collector, to).stdout)["records"] == 160
    files = set(to.rglob("*.parquet"))

    assert json.loads(_export(collector, to).stdout)["records"] == 0
    assert set(to.rglob("*.parquet")) == files  # nothing rewritten

    _fill(collector, tokens, start=4, batches=3)
    assert json.loads(_export(collector, to).stdout)["records"] == 120
    rows = _duckdb_rows(to)
    assert len(rows) == 280 and len({(r["device"], r["id"]) for r in rows}) == 280
    assert {p for p in files if p.exists()} == files  # old files untouched


@pytest.mark.parametrize("point", ["claimed", "file:1", "file:2", "written"])
def test_an_export_killed_at_any_step_exports_every_record_exactly_once(
    fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path, point: str
) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=9)
    to = tmp_path / "lake"
    killed = _export(collector, to, "--run-records", "150", env={CRASH_ENV: point})
    assert killed.returncode == -9, killed.stderr
    assert not list(to.rglob(".*.tmp")) or point.startswith("file")

    finished = _export(collector, to, "--run-records", "150")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["resumed"] == 1
    rows = _duckdb_rows(to)
    assert len(rows) == 360 and len({(r["device"], r["id"]) for r in rows}) == 360
    assert not list(to.rglob(".*.tmp"))


def test_export_killed_from_outside_again_and_again_still_exports_exactly_once(
    fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path
) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=30)
    to = tmp_path / "lake"
    command = [sys.executable, "-m", "edgepack", "export", "--db", _db(collector), "--to", str(to), "--run-records", "100"]
    for delay in (0.6, 0.9, 1.2, 1.5):
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    assert _export(collector, to).returncode == 0
    rows = _duckdb_rows(to)
    assert len(rows) == 1200 and len({(r["device"], r["id"]) for r in rows}) == 1200


def test_retention_deletes_only_exported_records(fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=3)
    to = tmp_path / "lake"
    kept = _export(collector, to, "--delete-exported-older-than", "30d")
    assert json.loads(kept.stdout) | {"seconds": 0} == {
        "records": 120, "files": json.loads(kept.stdout)["files"], "bytes": json.loads(kept.stdout)["bytes"],
        "runs": 1, "resumed": 0, "seconds": 0, "deleted": 0,
    }
    assert len(collector.records()) == 120  # exported, but younger than 30 days

    _fill(collector, tokens, start=3, batches=2)  # not exported yet
    assert delete_exported(_db(collector), older_than_seconds=0) == 120
    left = collector.records()
    assert len(left) == 80 and all(row["model"] and row["received_at"] for row in left)
    assert len(_duckdb_rows(to)) == 120  # the export keeps them

    assert json.loads(_export(collector, to, "--delete-exported-older-than", "0s").stdout)["deleted"] == 80
    assert collector.records() == []
    assert len(_duckdb_rows(to)) == 200


def test_a_bad_age_and_a_changed_destination_are_clear_errors(fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path) -> None:
    collector, tokens = fleet
    _fill(collector, tokens, start=0, batches=1)
    bad = _export(collector, tmp_path / "lake", "--delete-exported-older-than", "a month")
    assert bad.returncode == 2 and "expected an age such as 30d" in bad.stderr
    assert _export(collector, tmp_path / "lake").returncode == 0
    moved = _export(collector, tmp_path / "elsewhere")
    assert moved.returncode == 1
    assert "have been exported to" in moved.stderr and "lake" in moved.stderr


def test_a_known_manifest_gives_typed_columns_and_json_text_stays_complete(
    fleet: tuple[RunningCollector, dict[str, str]], tmp_path: Path
) -> None:
    collector, tokens = fleet
    _execute(collector, "CREATE TABLE bundles (sha256 TEXT PRIMARY KEY, model TEXT, version TEXT, manifest TEXT, received_at REAL)")
    manifest = {
        "inputs": [
            {"name": "temp_c", "onnx_input": "num", "slot": 0, "dtype": "float32", "kind": "numeric"},
            {"name": "region", "onnx_input": "cat", "slot": 0, "dtype": "string", "kind": "categorical"},
        ],
        "outputs": {"task": "classification", "classes": [0, 1], "label_only": False},
    }
    _execute(collector, "INSERT INTO bundles VALUES (?, ?, ?, ?, ?)", ("ab" * 32, "fire-risk", "3", json.dumps(manifest), 1.0))
    document = batch(3, version="3")
    document["records"][2]["inputs"] = {"temp_c": "hot", "region": "north"}  # not what the manifest says
    assert post(collector.url, collector.token, document).status_code == 200
    assert post(collector.url, collector.token, batch(2, version="4")).status_code == 200  # no manifest

    to = tmp_path / "lake"
    assert _export(collector, to).returncode == 0
    con = duckdb.connect()
    typed = con.execute(
        f"SELECT id, features.temp_c, features.region, prediction, probabilities['1'], inputs "
        f"FROM read_parquet('{to}/model=fire-risk/version=3/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    by_id = {row[0]: row for row in typed}
    good, odd = document["records"][0], document["records"][2]
    assert by_id[good["id"]][1:5] == (31.5, "north", 1, 0.8)
    assert by_id[odd["id"]][1] is None and json.loads(by_id[odd["id"]][5]) == odd["inputs"]
    untyped = ds.dataset(to / "model=fire-risk" / "version=4", format="parquet").schema
    assert "features" not in untyped.names and str(untyped.field("inputs").type) == "string"
    con.close()


def test_export_of_a_missing_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    result = _edgepack("export", "--db", str(tmp_path / "nope.db"), "--to", str(tmp_path / "lake"))
    assert result.returncode == 1 and "no such SQLite file" in result.stderr
