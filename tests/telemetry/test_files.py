"""The buffer's files on a real file system: owner-only permissions, a really full disk."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import telemetry

from .records import record


def test_every_data_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    old = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        buffer = telemetry.Buffer(path)
        for seq in range(10):
            record(buffer, seq)
        buffer.flush()
        files = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        buffer.close()
    finally:
        os.umask(old)
    assert {"p.db", "p.db-wal", "p.db-shm", "p.db-lock"} <= set(files)
    assert modes == {name: 0o600 for name in files}, modes


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs file system (needs root; CI runs the tests as root in a container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); this test needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def test_a_full_disk_at_open_is_reported_as_a_full_disk_and_the_file_is_kept(small_disk: Path) -> None:
    path = small_disk / "p.db"
    with telemetry.Buffer(path) as buffer:
        for seq in range(500):
            record(buffer, seq)
    filler = _fill(small_disk)
    with pytest.raises(telemetry.DiskFullError) as caught:
        telemetry.Buffer(path)
    message = str(caught.value)
    assert "the disk is full" in message and "do not delete it" in message
    assert "not a usable" not in message and "not an edgepack" not in message
    filler.unlink()
    with telemetry.Buffer(path) as buffer:
        assert buffer.pending() == 500


def test_records_accepted_while_the_disk_is_full_are_written_once_there_is_room(small_disk: Path) -> None:
    path = small_disk / "p.db"
    with telemetry.Buffer(path, retry_delay=0.05) as buffer:
        record(buffer, 0)
        buffer.flush()
        filler = _fill(small_disk)
        for seq in range(1, 3001):
            record(buffer, seq)
        with pytest.raises(telemetry.DiskFullError, match="the disk is full"):
            buffer.flush(timeout=30)
        filler.unlink()
        buffer.flush(timeout=30)
        assert buffer.pending() == 3001
