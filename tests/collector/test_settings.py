"""CollectorSettings: the contract's defaults, and bad values refused by name."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from home import CollectorSettings
from tests.support.collector import ROOT


def test_defaults_are_the_contract_limits(tmp_path: Path) -> None:
    settings = CollectorSettings(db_path=str(tmp_path / "c.db"), tokens_path=tmp_path / "t.json")
    assert settings.db_path == tmp_path / "c.db"
    assert (settings.max_body_bytes, settings.max_decompressed_bytes, settings.max_records) == (8 << 20, 32 << 20, 5000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_records = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 0), ("max_records", -5), ("max_decompressed_bytes", 1.5), ("max_pending_batches", True),
        ("lock_timeout_seconds", -1), ("max_pending_per_device", 0), ("max_inflight_bytes", 0.5),
        ("header_timeout_seconds", 0), ("body_timeout_seconds", "60"), ("max_header_connections", -1),
    ],
)
def test_bad_limits_are_refused_by_name(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"CollectorSettings.{field} must be"):
        CollectorSettings(db_path=tmp_path / "c.db", tokens_path=tmp_path / "t.json", **{field: value})


def test_options_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        CollectorSettings(tmp_path / "c.db", tmp_path / "t.json")  # type: ignore[misc]


def test_collector_errors_belong_to_the_home_tree() -> None:
    from home import CollectorError, HomeError
    from home.errors import SchemaError, StoreError, TokenError

    assert all(issubclass(error, CollectorError) for error in (SchemaError, StoreError, TokenError))
    assert issubclass(CollectorError, HomeError)


def test_importing_telemetry_leaves_the_collector_out() -> None:
    probe = "import sys, telemetry; print(sorted(m for m in sys.modules if m.startswith(('home', 'starlette', 'uvicorn'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_memory_bounds_default_to_whole_batches_and_must_hold_one(tmp_path: Path) -> None:
    paths = {"db_path": tmp_path / "c.db", "tokens_path": tmp_path / "t.json"}
    settings = CollectorSettings(**paths)
    assert (settings.max_inflight_bytes_per_device, settings.max_inflight_bytes) == (32 << 20, 64 << 20)
    assert (settings.max_pending_per_device, settings.header_timeout_seconds, settings.body_timeout_seconds) == (4, 10.0, 60.0)
    bigger = CollectorSettings(**paths, max_decompressed_bytes=100 << 20)
    assert (bigger.max_inflight_bytes_per_device, bigger.max_inflight_bytes) == (100 << 20, 200 << 20)
    # A full-size batch must fit in a device's share and in the pool, or it would be refused forever.
    with pytest.raises(ValueError, match="max_inflight_bytes_per_device .* must be at least max_decompressed_bytes"):
        CollectorSettings(**paths, max_inflight_bytes_per_device=1 << 20)
    with pytest.raises(ValueError, match="max_inflight_bytes .* must be at least max_inflight_bytes_per_device"):
        CollectorSettings(**paths, max_inflight_bytes=40 << 20, max_inflight_bytes_per_device=48 << 20)


def test_the_stats_client_needs_no_collector_extra() -> None:
    # `edgepack stats` runs on a device or a laptop: httpx only, never starlette or uvicorn.
    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from home.client import fetch_stats, format_stats\n"
        "from edgepack.cli import cli\n"
        "from click.testing import CliRunner\n"
        "result = CliRunner().invoke(cli, ['stats', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith(('starlette', 'uvicorn'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
