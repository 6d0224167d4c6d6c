"""What the ``edgepack`` command says: one error style, help that fits, and ``sync``'s lines
(a start line, each error once), against a real collector."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import telemetry
from edgepack.cli import SHORT_HELP_WIDTH, cli
from tests.support.collector import RunningCollector

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32


def _edgepack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def _buffer(path: Path, records: int) -> Path:
    with telemetry.Buffer(path) as buffer:
        for i in range(records):
            buffer.record(model="m", version="1", bundle_sha256=SHA, inputs={"x": float(i)}, outputs={"prediction": i % 2}, flags=[])
    return path


def test_the_command_list_shows_whole_short_descriptions() -> None:
    text = CliRunner().invoke(cli, ["--help"]).stdout
    listed = text.split("Commands:\n", 1)[1].splitlines()
    assert {line.split()[0] for line in listed if line.strip()} == set(cli.commands)
    for line in listed:
        assert "..." not in line and len(line) <= 80, line
    assert all(len(command.short_help or "") <= SHORT_HELP_WIDTH for command in cli.commands.values())
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):  # e.g. `edgepack token --help`
            sub = CliRunner().invoke(cli, [name, "--help"]).stdout.split("Commands:\n", 1)[1]
            assert "..." not in sub, sub


@pytest.mark.parametrize(
    "args",
    [
        ["build"],  # click: missing argument
        ["sync", "--db", "x.db"],  # click: missing option
        ["no-such-command"],
        ["predict", "no-such.edgepkg"],  # a command's own error
    ],
)
def test_every_error_says_error_in_one_style(args: list[str]) -> None:
    proc = _edgepack(*args)
    assert proc.returncode != 0
    assert "\nerror: " in "\n" + proc.stderr and "Error:" not in proc.stderr, proc.stderr


def test_sync_service_prints_a_start_line_and_stops_on_sigterm(tmp_path: Path, collector: RunningCollector) -> None:
    db = _buffer(tmp_path / "p.db", 3)
    token = tmp_path / "t"
    token.write_text(collector.token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "sync", "--db", str(db), "--endpoint", collector.url, "--token-file", str(token),
         "--interval", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while collector.stats()["records"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    start = [line for line in err.splitlines() if "edgepack.sync: sending" in line]
    assert len(start) == 1 and f"sending {db} to {collector.url}: 3 records waiting" in start[0]
    assert "then every 60 s until SIGTERM or Ctrl-C" in start[0]
    assert out.startswith("stop_requested: sent 3 records")


def test_sync_reports_a_refused_token_once(tmp_path: Path, collector: RunningCollector) -> None:
    db = _buffer(tmp_path / "p.db", 2)
    token = tmp_path / "t"
    token.write_text("not-the-token")
    proc = _edgepack("sync", "--once", "--db", str(db), "--endpoint", collector.url, "--token-file", str(token))
    assert proc.returncode == 3
    assert proc.stderr.count("refused this device's token") == 1, proc.stderr
    assert "None" not in proc.stderr


def test_sync_wait_gives_a_starting_collector_time(tmp_path: Path, collector: RunningCollector) -> None:
    db = _buffer(tmp_path / "p.db", 4)
    token = tmp_path / "t"
    token.write_text(collector.token)
    collector.stop()  # its port is free now; start() binds it again
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "sync", "--once", "--wait", "90", "--db", str(db), "--endpoint", collector.url,
         "--token-file", str(token)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)
    collector.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("drained: sent 4 records") and "retrying" not in err
