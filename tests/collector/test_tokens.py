"""Device tokens: shown once, stored as sha256 only, rotated without a restart."""

from __future__ import annotations

import hashlib
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgepack.cli import cli
from home import CollectorError, add_token
from home.tokens import TokenStore
from tests.support.collector import RunningCollector

from .batches import batch, post


def _token_add(*args: str) -> Result:
    return CliRunner().invoke(cli, ["token", "add", *args])


def test_token_add_prints_the_token_once_and_stores_only_its_sha256(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"

    result = _token_add("pump-7", "--tokens", str(tokens))

    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(result.stdout.splitlines()) == 1 and len(token) >= 40
    assert "shown only once" in result.stderr
    text = tokens.read_text()
    assert token not in text
    assert token[4:] not in text
    document = json.loads(text)
    assert document["devices"]["pump-7"]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600


def test_adding_an_existing_device_is_an_error_unless_rotate(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    first = _token_add("pump-7", "--tokens", str(tokens)).stdout.strip()
    before = tokens.read_bytes()

    again = _token_add("pump-7", "--tokens", str(tokens))

    assert again.exit_code == 1
    assert "already has a token" in again.stderr and "--rotate" in again.stderr
    assert again.stdout == ""
    assert tokens.read_bytes() == before

    rotated = _token_add("pump-7", "--tokens", str(tokens), "--rotate")
    assert rotated.exit_code == 0
    new = rotated.stdout.strip()
    assert new != first
    store = TokenStore(tokens)
    assert (store.device_for(new), store.device_for(first)) == ("pump-7", None)


@pytest.mark.parametrize("device_id", ["", "has space", "../etc", "-flag", "x" * 129])
def test_bad_device_ids_are_refused(tmp_path: Path, device_id: str) -> None:
    with pytest.raises(CollectorError, match="expected 1-128 characters"):
        add_token(tmp_path / "tokens.json", device_id)
    assert not (tmp_path / "tokens.json").exists()


def test_a_tokens_file_from_elsewhere_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"pump-7": "secret"}))
    with pytest.raises(CollectorError, match="not an edgepack tokens file"):
        add_token(tokens, "pump-8")
    with pytest.raises(CollectorError, match="not an edgepack tokens file"):
        TokenStore(tokens)


def test_concurrent_adds_lose_no_device(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    names = [f"unit-{i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        issued = dict(zip(names, pool.map(lambda name: add_token(tokens, name), names)))
    store = TokenStore(tokens)
    assert store.devices == sorted(names)
    assert all(store.device_for(token) == name for name, token in issued.items())


def test_cli_added_and_rotated_tokens_work_without_a_restart(collector: RunningCollector) -> None:
    added = _token_add("field-3", "--tokens", str(collector.tokens_path))
    token = added.stdout.strip()
    assert post(collector.url, token, batch(2)).json() == {"accepted": 2, "duplicates": 0}

    rotated = _token_add("field-3", "--tokens", str(collector.tokens_path), "--rotate").stdout.strip()

    old = post(collector.url, token, batch(1))
    assert old.status_code == 401
    assert post(collector.url, rotated, batch(1)).json() == {"accepted": 1, "duplicates": 0}
    assert len(collector.records("field-3")) == 3
    # The other device is untouched by the rotation.
    assert post(collector.url, collector.token, batch(1)).status_code == 200


def test_token_add_leaves_only_the_tokens_file(tmp_path: Path) -> None:
    add_token(tmp_path / "tokens.json", "a")
    add_token(tmp_path / "tokens.json", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]
