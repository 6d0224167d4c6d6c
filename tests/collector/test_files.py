"""The collector's files: owner-only data and logs, and a full disk said as such."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from home import add_token
from home.stores.sqlite import Store
from tests.support.collector import ROOT, RunningCollector

from .batches import batch, post


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_log_and_tokens_are_owner_only(collector: RunningCollector) -> None:
    old = os.umask(0o022)  # the usual umask, which on its own gives 0644 files
    try:
        assert post(collector.url, collector.token, batch(3)).status_code == 200
        wal, shm = Path(f"{collector.db_path}-wal"), Path(f"{collector.db_path}-shm")
        assert wal.exists() and shm.exists(), "WAL mode keeps both next to the store while it runs"
        lock = Path(f"{collector.db_path}-lock")  # the writers' lock (home/stores/write_lock.py)
        modes = {path.name: _mode(path) for path in (collector.db_path, wal, shm, lock, collector.log_path, collector.tokens_path)}
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(modes, 0o600), {name: oct(mode) for name, mode in modes.items()}


def test_an_existing_world_readable_store_is_made_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "records.db"
    Store(db).close()
    os.chmod(db, 0o644)

    Store(db).close()

    assert _mode(db) == 0o600


def _full_disk_run(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) with $DISK a 512 KiB tmpfs filled to the last byte, in a private mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a small private tmpfs (util-linux)")
    disk = tmp_path / "disk"
    disk.mkdir()
    setup = f'set -e; mount -t tmpfs -o size=512k tmpfs "$DISK"; dd if=/dev/zero of="$DISK/fill" bs=4k 2>/dev/null || true; {script}'
    env = {**os.environ, "DISK": str(disk), "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    # Root can make a mount namespace as it is; anyone else needs a user namespace for it.
    flags = ["-m"] if os.geteuid() == 0 else ["-Urm"]
    probe = subprocess.run([unshare, *flags, "sh", "-c", 'mount -t tmpfs tmpfs "$DISK"'], env=env, capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here ({probe.stderr.decode().strip()}): no full disk to test against")
    return subprocess.run([unshare, *flags, "sh", "-c", setup], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_a_full_disk_at_open_is_reported_as_a_full_disk(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    add_token(tokens, "d1")

    done = _full_disk_run(tmp_path, f'exec "$PY" -m edgepack collector --db "$DISK/records.db" --tokens {tokens} --port 0')

    assert done.returncode == 1, done.stderr
    assert "the disk holding" in done.stderr and "is full" in done.stderr, done.stderr
    assert "free some space" in done.stderr and "not damaged" in done.stderr
    assert "not a usable" not in done.stderr and "Traceback" not in done.stderr


def test_a_healthy_store_on_a_full_disk_is_reported_as_full_and_left_intact(tmp_path: Path) -> None:
    # The store exists and holds records; the disk fills while the collector is down.
    script = (
        'rm "$DISK/fill"; '
        '"$PY" -c "import sys; from home.stores.sqlite import Store; Store(sys.argv[1]).close()" "$DISK/records.db"; '
        'dd if=/dev/zero of="$DISK/fill" bs=1k 2>/dev/null || true; '
        '"$PY" -c "import sys; from home.stores.sqlite import Store; Store(sys.argv[1])" "$DISK/records.db" || true; '
        'rm "$DISK/fill"; '
        '"$PY" -c "import sys; from home.stores.sqlite import Store; s = Store(sys.argv[1]); print(s.stats()); s.close()" "$DISK/records.db"'
    )

    done = _full_disk_run(tmp_path, script)

    assert "is full" in done.stderr, done.stderr
    # Once there is room again the same file opens as before.
    assert done.returncode == 0 and "'records': 0" in done.stdout, done.stdout + done.stderr


def test_log_file_is_owner_only(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    add_token(tokens, "d1")
    log = tmp_path / "collector.log"
    old = os.umask(0o022)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "edgepack", "collector", "--db", str(tmp_path / "c.db"), "--tokens", str(tokens),
             "--port", "0", "--log-file", str(log)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    finally:
        os.umask(old)
    try:
        deadline = time.monotonic() + 60
        while "listening on http://127.0.0.1:" not in (log.read_text() if log.exists() else ""):
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.stderr else ""
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    assert child.returncode == 0
    assert _mode(log) == 0o600
    assert "stopped on SIGTERM" in log.read_text()


@pytest.mark.parametrize("variables", [None, 999])
def test_a_batch_spanning_several_insert_statements_is_stored_once_and_counts_its_duplicates(tmp_path: Path, variables: int | None) -> None:
    # The store inserts a few hundred records per statement (fewer where SQLite takes 999
    # parameters): a batch over several statements, half of it already known, is counted
    # record by record, and every stored row holds its own fields.
    import dataclasses
    import sqlite3

    from home.schema import parse_batch
    from home.stores import sqlite as store_module

    store = Store(tmp_path / "records.db")
    if variables is not None:
        store.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        store._rows_per_insert = store_module.rows_per_insert(store.conn)
        assert store._rows_per_insert == (variables - 3) // 8
    try:
        document = batch(1_234)
        parsed = parse_batch(document, max_records=10_000)
        first = store.ingest("dev", dataclasses.replace(parsed, records=_part(parsed.records, 0, 617)), received_at=1.0)
        second = store.ingest("dev", parsed, received_at=2.0)
        assert (first.accepted, first.duplicates) == (617, 0)
        assert (second.accepted, second.duplicates) == (1_234 - 617, 617)
        stored = dict(
            (row[0], row) for row in store.conn.execute("SELECT id, ts, inputs, received_at, batch_id FROM records WHERE device = 'dev'")
        )
        assert len(stored) == 1_234
        for i, record in enumerate(document["records"]):
            row = stored[record["id"]]
            assert row[1] == record["ts"] and row[2] == parsed.records.inputs[i]
            assert row[3] == (1.0 if i < 617 else 2.0) and row[4] == document["batch_id"]
    finally:
        store.close()


def _part(records: object, start: int, end: int) -> object:
    import dataclasses

    return dataclasses.replace(records, **{f.name: getattr(records, f.name)[start:end] for f in dataclasses.fields(records)})  # type: ignore[arg-type]
