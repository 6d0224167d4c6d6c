"""What only the PostgreSQL store has: a real server failing under it, its migrations,
and several collectors sharing one database, with a device that moves between them
across crashes. (Everything the two stores share runs against both in the other modules.)"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

import telemetry
from edgepack.cli import cli
from home import add_token
from home.stores.migrations import LATEST
from telemetry import SyncOptions, SyncService
from tests.support.collector import RunningCollector
from tests.support.postgres import PostgresServer, execute

from .batches import batch, post


def test_a_failing_server_answers_503_and_keeps_nothing_of_the_batch(collector_factory: Callable[..., RunningCollector], postgres_url: str) -> None:
    collector = collector_factory(db_url=postgres_url)
    document = batch(5, counters={"dropped": 3, "sampled_out": 0, "dead_lettered": 0})
    poison = document["records"][3]["id"]
    # A real server-side failure in the middle of the batch: the 4th row aborts the statement.
    execute(
        postgres_url,
        f"""CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN
              IF NEW.id = '{poison}' THEN RAISE EXCEPTION 'simulated disk failure'; END IF; RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER poison BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION poison();""",
    )

    refused = post(collector.url, collector.token, document)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "simulated disk failure" in refused.json()["error"]
    assert "nothing was stored" in refused.json()["error"]
    assert collector.records() == []
    assert collector.devices() == {}

    execute(postgres_url, "DROP TRIGGER poison ON records")
    assert post(collector.url, collector.token, document).json() == {"accepted": 5, "duplicates": 0}
    assert collector.devices()["device-1"]["dropped"] == 3


def test_connections_cut_by_the_server_answer_503_then_recover(collector_factory: Callable[..., RunningCollector], postgres_url: str) -> None:
    collector = collector_factory(db_url=postgres_url)
    assert post(collector.url, collector.token, batch(2)).status_code == 200
    name = postgres_url.rsplit("/", 1)[-1]
    # What a server restart or a failover does to every open connection of the pool.
    execute(postgres_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    document = batch(3)
    answers = []
    for _ in range(20):
        response = post(collector.url, collector.token, document)
        answers.append(response.status_code)
        if response.status_code == 200:
            break
        assert response.status_code == 503 and response.headers["Retry-After"] == "5", response.text
    assert answers[-1] == 200
    assert len(collector.records()) == 5
    assert collector.stats()["records"] == 5


def test_an_unreachable_server_is_a_clear_startup_error_without_the_password(tmp_path: Path) -> None:
    add_token(tmp_path / "tokens.json", "d1")
    # Port 9 (discard) on loopback: nothing listens there.
    url = "postgresql://edge:s3cret-pass@127.0.0.1:9/fleet"
    result = CliRunner().invoke(cli, ["collector", "--db", url, "--tokens", str(tmp_path / "tokens.json"), "--port", "0"])
    assert result.exit_code == 1
    assert "opening the store postgresql://edge@127.0.0.1:9/fleet" in result.stderr
    assert "s3cret-pass" not in result.stderr


def test_schema_is_versioned_and_a_newer_schema_is_refused(collector_factory: Callable[..., RunningCollector], postgres_url: str, tmp_path: Path) -> None:
    collector = collector_factory(db_url=postgres_url)
    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST + 1))
    collector.restart()  # migrating again changes nothing
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == LATEST
    collector.stop()

    execute(postgres_url, "INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    result = CliRunner().invoke(cli, ["collector", "--db", postgres_url, "--tokens", str(collector.tokens_path), "--port", "0"])
    assert result.exit_code == 1
    assert "schema version 99" in result.stderr and "upgrade edgepack" in result.stderr


def test_a_nul_character_postgresql_cannot_store_is_refused_with_422(collector_factory: Callable[..., RunningCollector], postgres_url: str) -> None:
    collector = collector_factory(db_url=postgres_url)
    document = batch(3)
    document["records"][1]["model"] = "fire\x00risk"
    refused = post(collector.url, collector.token, document)
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("records[1].model: expected text without NUL")
    assert collector.records() == []


def test_a_batch_retried_against_the_other_collector_stores_nothing_twice(collector_pair: tuple[RunningCollector, RunningCollector]) -> None:
    first, second = collector_pair
    document = batch(50, counters={"dropped": 4, "sampled_out": 1, "dead_lettered": 0})
    assert post(first.url, first.token, document).json() == {"accepted": 50, "duplicates": 0}
    assert post(second.url, first.token, document).json() == {"accepted": 0, "duplicates": 50}
    admin = first.add_admin()
    assert first.stats(admin) == second.stats(admin)
    assert first.stats(admin)["records"] == 50 and first.stats(admin)["dropped"] == 4
    assert first.devices()["device-1"]["batches"] == 2


def test_the_same_batch_sent_to_both_collectors_at_once_is_stored_once(collector_pair: tuple[RunningCollector, RunningCollector]) -> None:
    first, second = collector_pair
    for _ in range(5):
        document = batch(500)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda c: post(c.url, first.token, document).json(), (first, second)))
        assert sum(answer["accepted"] for answer in answers) == 500, answers
        assert all(answer["accepted"] + answer["duplicates"] == 500 for answer in answers)
    assert len(first.records("device-1")) == 2500


def test_a_device_alternating_between_two_collectors_across_crashes_stores_everything_once(
    collector_pair: tuple[RunningCollector, RunningCollector], tmp_path: Path
) -> None:
    collectors = list(collector_pair)
    token = collectors[0].token
    count = 6000
    with telemetry.Buffer(tmp_path / "device.db") as buffer:
        for seq in range(count):
            buffer.record(
                model="fire-risk", version=str(1 + seq % 2), bundle_sha256="ab" * 32,
                inputs={"temp_c": seq / 10, "region": "north"}, outputs={"prediction": seq % 2}, flags=[],
            )
        buffer.flush()
        rng = random.Random(15)
        kills = 0
        accepted = duplicates = 0
        for round_ in range(40):
            target = collectors[round_ % 2]
            if not target.running:
                target.start()
            timer: list[threading.Thread] = []

            def crash_soon(report: object, target: RunningCollector = target) -> None:
                # After the first acknowledged batch of this round, kill -9 the collector
                # a moment later: the next batch is usually on its way or being stored.
                if not timer:
                    thread = threading.Thread(target=lambda: (time.sleep(rng.uniform(0.0, 0.03)), target.kill()))
                    timer.append(thread)
                    thread.start()

            sync = SyncService(
                buffer, target.url, token=token, on_batch=crash_soon,
                options=SyncOptions(batch_size=250, backoff_base=0.01, backoff_cap=0.05, max_attempts=2),
            )
            try:
                result = sync.sync_once()
            finally:
                sync.close()
            for thread in timer:
                thread.join()
                kills += 1
            accepted += result.accepted
            duplicates += result.duplicates
            if buffer.pending() == 0:
                break
        assert buffer.pending() == 0, f"records left on the device after {round_ + 1} rounds"
    assert kills >= 4
    for collector in collectors:
        if not collector.running:
            collector.start()
    rows = collectors[0].records("device-1")
    assert len(rows) == count and len({row["id"] for row in rows}) == count
    assert sorted(row["inputs"]["temp_c"] for row in rows) == sorted(seq / 10 for seq in range(count))
    # Every record was counted as new exactly once, whichever collector stored it; the
    # ones stored by a collector that died before answering came back as duplicates.
    assert accepted <= count and accepted + duplicates >= count
    admin = collectors[0].add_admin()
    assert collectors[0].stats(admin)["records"] == collectors[1].stats(admin)["records"] == count


def test_the_session_server_runs_as_a_non_root_user(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as conn:
        assert conn.execute("SELECT current_setting('data_directory')").fetchone()[0] == str(postgres_server.data)
    owner = postgres_server.data.stat().st_uid
    assert owner != 0


def _alive(pid: int) -> bool:
    # A worker reparented to a PID 1 that does not reap stays a zombie: that counts as gone.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_workers_stop_when_their_collector_process_is_killed(collector_factory: Callable[..., RunningCollector], postgres_url: str) -> None:
    collector = collector_factory(db_url=postgres_url, workers=2)
    assert post(collector.url, collector.token, batch(10)).json() == {"accepted": 10, "duplicates": 0}
    deadline = time.monotonic() + 30
    while len(workers := {int(line.split()[0]) for line in collector.log().splitlines() if " store " in line and " open;" in line}) < 2:
        assert time.monotonic() < deadline, collector.log()[-3000:]
        time.sleep(0.2)
    assert collector.process is not None and all(_alive(pid) for pid in workers)
    collector.process.kill()  # SIGKILL: the supervisor gets no chance to stop its workers
    collector.process.wait(10)
    deadline = time.monotonic() + 20
    try:
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {sorted(p for p in workers if _alive(p))} outlived their collector"
            time.sleep(0.2)
    finally:
        for pid in filter(_alive, workers):  # leave no worker behind when this fails
            os.kill(pid, signal.SIGKILL)
    assert "that started this worker is gone: stopping" in collector.log()
    # The port is free again: a new collector can take it.
    collector.start()
    assert post(collector.url, collector.token, batch(10)).json() == {"accepted": 10, "duplicates": 0}


def test_what_a_postgres_collector_does_not_serve_is_named(collector_factory: Callable[..., RunningCollector], postgres_url: str) -> None:
    import httpx

    collector = collector_factory(db_url=postgres_url)
    admin = {"authorization": f"Bearer {collector.add_admin()}"}
    report = httpx.get(f"{collector.url}/v1/report?model=m", headers=admin, timeout=10)
    assert report.status_code == 501
    assert "SQLite store only" in report.json()["error"] and "edgepack export" in report.json()["error"]
    metadata = httpx.get(f"{collector.url}/v1/tuf/metadata/timestamp.json", headers={"authorization": f"Bearer {collector.token}"}, timeout=10)
    assert metadata.status_code == 404
    assert "--releases DIR" in metadata.json()["error"]
    # Neither gap touches ingest.
    assert post(collector.url, collector.token, batch(2)).json() == {"accepted": 2, "duplicates": 0}
