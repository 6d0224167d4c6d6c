"""``edgepack predict --buffer`` and what ``predict`` says about malformed input, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import telemetry
from edgepack.cli import cli
from tests.support.collector import RunningCollector

from . import builder

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, input: str | None = None) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def _stats(path: Path) -> telemetry.BufferStats:
    with telemetry.Buffer(path, create=False) as buffer:
        return buffer.stats()


def test_predict_buffer_records_each_prediction_and_sync_delivers_them(
    tmp_path: Path, fire: builder.Built, good_row: dict, collector: RunningCollector
) -> None:
    db = tmp_path / "predictions.db"
    rows = [good_row, {**good_row, "region": "highlands"}, {**good_row, "temp c": "hot"}, {**good_row, "wind_kmh": 30.0}]
    code, out, err = _run("predict", str(fire.path), "--buffer", str(db), input="".join(json.dumps(r) + "\n" for r in rows))
    assert code == 1 and len(out) == 4  # the refused row is reported and not recorded
    assert f"3 prediction(s) in {db} waiting for `edgepack sync --db {db}`" in err
    assert _stats(db).pending == 3

    token_file = tmp_path / "device.token"
    token_file.write_text(collector.token + "\n")
    sync = subprocess.run(
        [sys.executable, "-m", "edgepack", "sync", "--once", "--db", str(db), "--endpoint", collector.url, "--token-file", str(token_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout.startswith("drained: sent 3 records in 1 batches (accepted 3, duplicates 0)")
    stored = collector.records(collector.device_id)
    assert [r["inputs"]["region"] for r in stored] == ["north", "highlands", "north"]
    assert [r["flags"] for r in stored] == [[], ["unseen_category:region"], []]
    assert _stats(db).pending == 0


def test_predict_passes_buffer_options_like_the_library(tmp_path: Path, fire: builder.Built, good_row: dict) -> None:
    db = tmp_path / "sampled.db"
    lines = "".join(json.dumps(good_row) + "\n" for _ in range(5))
    code, _, err = _run("predict", str(fire.path), "--buffer", str(db), "--sample-rate", "0", "--max-bytes", "0",
                        "--durability", "process", "--when-full", "drop_newest", input=lines)
    assert code == 0, err
    stats = _stats(db)
    assert (stats.recorded, stats.sampled_out, stats.pending) == (5, 5, 0)

    code, out, err = _run("predict", str(fire.path), "--when-full", "drop_newest", "--group-size", "10", input=lines)
    assert code == 2 and out == []
    assert "--when-full, --group-size need --buffer FILE" in err


def test_csv_on_stdin_without_format_is_named_once_with_the_fix(tmp_path: Path, fire: builder.Built) -> None:
    text = "temp c,humidity_pct,wind_kmh,region,vegetation\n25.0,20.5,12,north,grass\n30,10,12,south,shrub\n"
    code, out, err = _run("predict", str(fire.path), input=text)
    assert code == 2 and out == []
    assert "stdin looks like CSV, not JSON lines" in err and "pass --format csv" in err
    assert err.count("error:") == 1 and "not valid JSON" not in err
    code, out, _ = _run("predict", str(fire.path), "--format", "csv", input=text)
    assert code == 0 and len(out) == 2
    # A .jsonl file holding CSV gets the same answer, naming the file.
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    code, out, err = _run("predict", str(fire.path), "--input", str(path))
    assert code == 2 and out == [] and f"{str(path)!r} looks like CSV" in err


def test_a_broken_json_line_reports_its_line_number(fire: builder.Built, good_row: dict) -> None:
    good = json.dumps(good_row)
    code, out, _ = _run("predict", str(fire.path), input=f"{good}\n\n\n{good[:20]}\n{good}\n")
    results = [json.loads(line) for line in out]
    assert code == 1 and [r["row"] for r in results] == [1, 2, 3]
    assert results[1]["error"].startswith("not valid JSON at line 4, column ")
    assert "error" not in results[2]


def test_predict_offers_every_buffer_option_of_the_library_with_its_default() -> None:
    from dataclasses import fields

    from edgepack.commands.device_commands import _BUFFER_OPTIONS

    library = {f.name for f in fields(telemetry.BufferOptions)} - {"create"}  # --buffer always creates
    assert set(_BUFFER_OPTIONS) == library, "predict --buffer must offer the same options as telemetry.BufferOptions"
    help_text = " ".join(CliRunner().invoke(cli, ["predict", "--help"], terminal_width=400).stdout.split())
    defaults = telemetry.BufferOptions()
    for name in _BUFFER_OPTIONS:
        value = getattr(defaults, name)
        shown = {268435456: "256 MiB"}.get(value, f"{value:g}" if isinstance(value, float) else str(value))
        assert f"--{name.replace('_', '-')}" in help_text and f"default {shown}" in help_text, name
