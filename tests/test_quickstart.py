"""The quickstart is README's first command: it must run end to end, twice in one folder."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.quickstart import data, handover, retrain
from tests.support.docs import shell_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_the_whole_path_and_reruns_in_the_same_folder(tmp_path: Path) -> None:
    folder = tmp_path / "qs"
    for attempt in (1, 2):
        out = subprocess.run(
            [sys.executable, "-m", "edgepack", "quickstart", str(folder)],
            capture_output=True, text=True, timeout=600,
        )
        assert out.returncode == 0, f"run {attempt}: {out.stderr[-3000:]}"
        report = out.stdout
        predictions = int(re.search(r"(\d+) predictions", report).group(1))
        delivered = int(re.search(r"delivered (\d+) records; collector holds (\d+)", report).group(1))
        held = int(re.search(r"collector holds (\d+)", report).group(1))
        # Exactly the predictions made reach the collector, and the folder starts afresh each run.
        assert predictions == delivered == held == 500
        assert "label agreement 100%" in report
        assert re.search(r"unseen_category ×\d+", report), report
        assert "production: fire-risk version 2" in report
        # The rollout step: v2 published as a release, the running device switches to it, in the report too.
        assert "the running device switched from version 1 to version 2" in out.stderr and "without a restart" in out.stderr
        rollout = report.split("\nRollout\n", 1)[1].split("\nFiles in ", 1)[0]
        assert "as release 1 on channel stable" in rollout and "health gate passed" in rollout
        assert re.search(r"switched from version 1 to version 2 in [\d.]+ s without a restart", rollout), rollout
        # The hand-over: where everything went, and the commands that continue from there.
        assert f"Files in {folder.resolve()}" in report
        for name in ("mlflow.db", "keys/edge.pem", "keys/edge.pub", "dist/fire-risk.edgepkg", "tokens.json",
                     handover.REFERENCE_CSV, handover.ROWS_CSV, "predictions.db", "collector.db", "releases/", "device-store/"):
            assert name in report and (folder / name).exists(), name
        next_lines = report.split('Next: continue from this folder (README.md, "From registry to device"):\n', 1)[1]
        printed = [line.strip() for line in next_lines.splitlines()]
        assert f"cd {folder.resolve()}" in printed
        assert printed[-len(handover.NEXT):] == list(handover.NEXT)

    bundle = folder / "dist" / "fire-risk.edgepkg"
    verify = subprocess.run(
        [sys.executable, "-m", "edgepack", "verify", str(bundle), "--public-key", str(folder / "keys" / "edge.pub")],
        capture_output=True, text=True,
    )
    assert verify.returncode == 0, verify.stderr
    with sqlite3.connect(folder / "history.db") as db:
        rows = db.execute("select candidate_version, promoted from promotions order by rowid").fetchall()
    assert rows == [("1", 1), ("2", 1)]


@pytest.mark.parametrize(
    ("candidate", "champion", "promoted"),
    [(0.80, None, True), (0.85, 0.80, True), (0.803, 0.80, False), (0.70, 0.80, False)],
)
def test_promotion_needs_a_real_gain(candidate: float, champion: float | None, promoted: bool) -> None:
    decision = retrain.decide(
        model="m", candidate_version="2", candidate_auc=candidate,
        champion_version=None if champion is None else "1", champion_auc=champion, min_gain=0.005,
    )
    assert decision.promoted is promoted
    assert ("not promoted" in decision.reason) is (not promoted)


def test_this_season_drifts_from_the_last() -> None:
    last = data.make_season(2000, season="last", seed=1)
    this = data.make_season(2000, season="this", seed=1)
    assert this["temp_c"].mean() - last["temp_c"].mean() > 3
    assert this["humidity_pct"].mean() < last["humidity_pct"].mean() - 5
    assert this[data.TARGET].mean() > last[data.TARGET].mean()
    stream = data.device_stream(100, seed=3)
    assert sum(row["region"] == data.UNSEEN_REGION for row in stream) == 4


def _commands(text_lines: list[str]) -> list[str]:
    """Shell lines as a reader types them: continuations joined, trailing comments dropped."""
    joined, current = [], ""
    for line in text_lines:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
            continue
        command = current.split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            joined.append(" ".join(command.split()))
        current = ""
    return joined


def test_the_printed_next_commands_are_the_readmes_flow_in_order() -> None:
    readme = [c for block in shell_blocks(ROOT / "README.md") for c in _commands(list(block.lines))]
    positions = [readme.index(command) for command in handover.NEXT]  # ValueError names a command README lacks
    assert positions == sorted(positions), "the quickstart prints README's commands in README's order"
    assert "cd edgepack-quickstart" in readme[: positions[0]]


def test_quickstart_help_shows_its_default_folder() -> None:
    from click.testing import CliRunner

    from edgepack.cli import cli

    assert "default: ./edgepack-quickstart" in CliRunner().invoke(cli, ["quickstart", "--help"]).stdout
