"""Roles: device tokens see their own device, admin tokens the fleet; listing and revoking
tokens; ``edgepack stats`` for both roles."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from edgepack.cli import cli
from home import CollectorError, add_token, list_tokens, revoke_token
from home.tokens import TokenStore
from tests.support.collector import RunningCollector

from .batches import auth, batch, post


def _edgepack(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _token_file(directory: Path, name: str, token: str) -> Path:
    path = directory / f"{name}.token"
    path.write_text(token + "\n")
    return path


def test_admin_tokens_are_a_separate_role(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    device = add_token(tokens, "pump-7")
    admin = add_token(tokens, "ops", admin=True)

    store = TokenStore(tokens)
    assert (store.identity_for(device).role, store.identity_for(admin).role) == ("device", "admin")  # type: ignore[union-attr]
    assert store.device_for(admin) is None and store.devices == ["pump-7"]
    assert admin.startswith("epa_") and device.startswith("ept_")
    # Admins are kept apart from devices, so a collector that knows no roles never takes one for a device.
    document = json.loads(tokens.read_text())
    assert set(document["devices"]) == {"pump-7"} and set(document["admins"]) == {"ops"}
    with pytest.raises(CollectorError, match="names are unique across devices and admins"):
        add_token(tokens, "pump-7", admin=True)
    with pytest.raises(CollectorError, match="names are unique across devices and admins"):
        add_token(tokens, "ops")


def test_an_admin_token_cannot_upload_as_a_device(collector: RunningCollector) -> None:
    admin = collector.add_admin("ops")
    response = post(collector.url, admin, batch(2))
    assert response.status_code == 403
    assert "admin token" in response.json()["error"] and "device's own token" in response.json()["error"]
    assert collector.records() == [] and collector.devices() == {}


def test_a_device_token_reads_only_its_own_stats(collector: RunningCollector) -> None:
    other = collector.add_device("device-2")
    post(collector.url, other, batch(4, model="flood"))
    post(collector.url, collector.token, batch(1))

    mine = collector.stats()
    assert (mine["scope"], mine["device"], mine["records"], mine["devices"], list(mine["by_model"])) == (
        "device", "device-1", 1, 1, ["fire-risk"],
    )
    refused = httpx.get(f"{collector.url}/v1/stats", params={"device": "device-2"}, headers=auth(collector.token))
    assert refused.status_code == 403 and "admin token" in refused.json()["error"]
    # Asking for itself by name is allowed.
    assert collector.stats(device="device-1") == mine
    admin = collector.add_admin("ops")
    assert collector.stats(admin)["records"] == 5 and collector.stats(admin, device="device-2")["records"] == 4


def test_token_list_shows_names_and_roles_never_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    issued = [_edgepack("token", "add", name, "--tokens", str(tokens)).stdout.strip() for name in ("pump-7", "pump-8")]
    admin = _edgepack("token", "add", "ops", "--admin", "--tokens", str(tokens))
    assert admin.exit_code == 0 and "added admin 'ops'" in admin.stderr

    listed = _edgepack("token", "list", "--tokens", str(tokens))
    as_json = _edgepack("token", "list", "--tokens", str(tokens), "--json")

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ADDED", "(UTC)", "SHA256"]
    assert [line.split()[:2] for line in lines[1:]] == [["pump-7", "device"], ["pump-8", "device"], ["ops", "admin"]]
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(row["name"], row["role"]) for row in rows] == [("pump-7", "device"), ("pump-8", "device"), ("ops", "admin")]
    for token in [*issued, admin.stdout.strip()]:
        assert token not in listed.stdout and token not in as_json.stdout
    assert [entry.name for entry in list_tokens(tokens)] == ["pump-7", "pump-8", "ops"]


def test_a_revoked_token_is_refused_at_once_without_a_restart(collector: RunningCollector) -> None:
    doomed = collector.add_device("field-3")
    admin = collector.add_admin("ops")
    assert post(collector.url, doomed, batch(2)).json() == {"accepted": 2, "duplicates": 0}
    pid = collector.process.pid if collector.process else None

    revoked = _edgepack("token", "revoke", "field-3", "--tokens", str(collector.tokens_path))

    assert revoked.exit_code == 0, revoked.output
    assert "revoked the token of device 'field-3'" in revoked.stderr
    # The very next request is refused: no restart, no wait for a reload interval.
    refused = post(collector.url, doomed, batch(1))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]
    assert collector.process is not None and collector.process.pid == pid
    # What it stored before is kept; other devices and the admin go on working.
    assert len(collector.records("field-3")) == 2
    assert post(collector.url, collector.token, batch(1)).status_code == 200
    assert collector.stats(admin)["records"] == 3
    # Revoking an admin works the same way.
    assert revoke_token(collector.tokens_path, "ops") == "admin"
    assert httpx.get(f"{collector.url}/v1/stats", headers=auth(admin)).status_code == 401


def test_revoking_an_unknown_name_says_who_is_known(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    add_token(tokens, "pump-7")
    before = tokens.read_bytes()
    result = _edgepack("token", "revoke", "pump-9", "--tokens", str(tokens))
    assert result.exit_code == 1
    assert "no device or admin 'pump-9'" in result.stderr and "known: pump-7" in result.stderr
    assert tokens.read_bytes() == before


def test_stats_command_for_a_device_and_for_the_fleet(collector: RunningCollector, tmp_path: Path) -> None:
    other = collector.add_device("device-2")
    post(collector.url, collector.token, batch(3, counters={"dropped": 2, "sampled_out": 0, "dead_lettered": 1, "lost": 4}))
    post(collector.url, other, batch(2, model="flood", version="12"))
    device_file = _token_file(tmp_path, "device", collector.token)
    admin_file = _token_file(tmp_path, "admin", collector.add_admin("ops"))

    human = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(device_file))
    device_json = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(device_file), "--json")
    fleet = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(admin_file))
    fleet_json = _edgepack("stats", "--endpoint", collector.url + "/", "--token-file", str(admin_file), "--json")
    one = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(admin_file), "--device", "device-2", "--json")

    assert human.exit_code == 0, human.output
    assert human.stdout.splitlines() == [
        "device device-1: 3 records stored",
        "  fire-risk v3: 3",
        "counters reported by the device(s): dropped 2, sampled_out 0, dead_lettered 1, lost 4",
    ]
    assert json.loads(device_json.stdout) == collector.stats()
    assert fleet.stdout.splitlines()[:3] == ["fleet: 5 records stored from 2 devices", "  fire-risk v3: 3", "  flood v12: 2"]
    assert json.loads(fleet_json.stdout)["records"] == 5 and json.loads(fleet_json.stdout)["scope"] == "fleet"
    assert json.loads(one.stdout)["device"] == "device-2" and json.loads(one.stdout)["records"] == 2


def test_stats_command_errors_name_the_fix(collector: RunningCollector, tmp_path: Path) -> None:
    wrong = _token_file(tmp_path, "wrong", "ept_not-a-token")
    device_file = _token_file(tmp_path, "device", collector.token)
    empty = tmp_path / "empty.token"
    empty.write_text("\n")

    refused = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(wrong))
    other_device = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(device_file), "--device", "x")
    unreachable = _edgepack("stats", "--endpoint", "http://127.0.0.1:9", "--token-file", str(device_file))
    usage = _edgepack("stats", "--endpoint", collector.url, "--token-file", str(empty))

    assert refused.exit_code == 3 and "401" in refused.stderr and "--token-file" in refused.stderr
    assert other_device.exit_code == 3 and "403" in other_device.stderr and "edgepack token add --admin" in other_device.stderr
    assert unreachable.exit_code == 1 and "cannot reach the collector" in unreachable.stderr
    assert usage.exit_code == 2 and "is empty" in usage.stderr
