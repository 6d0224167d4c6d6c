"""The device model store: verified installs, downgrade protection, rollback, and power
safety under a real SIGKILL of ``edgepack install`` at every step of an install."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runtime
from runtime.store import PAUSE_ENV, PAUSE_POINTS, DowngradeError, ModelStore, StoreError
from tests.runtime import builder

from .support import cli_env, edgepack


def _serving(store: Path, public_key: Path) -> runtime.EdgeModel:
    """What a device would serve from the store now (a full verified load)."""
    current = ModelStore(store).current_path()
    assert current is not None, "the store has no current bundle"
    return runtime.load(current, public_key=public_key, require_signature=True)


def test_install_verifies_then_switches_and_keeps_the_previous(fire_v1, fire_v2, keys, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", create=True)
    first = store.install(fire_v1.path, public_key=keys[1], require_signature=True)
    assert first.changed and first.previous is None and first.signature_verified
    second = store.install(fire_v2.path, public_key=keys[1], require_signature=True)
    assert second.previous == first.entry
    state = store.state()
    assert (state.current.version, state.previous.version, state.generation) == ("2", "1", 2)
    assert state.highest == {"fire-risk": "2"}
    assert sorted(p.name for p in (tmp_path / "store" / "bundles").iterdir()) == sorted(
        f"{e.sha256}.edgepkg" for e in (state.current, state.previous)
    )
    assert store.path_of(state.current).read_bytes() == fire_v2.path.read_bytes()
    assert not store.install(fire_v2.path, public_key=keys[1]).changed  # already current: nothing written
    assert store.state().generation == 2
    assert oct(os.stat(store.pointer).st_mode & 0o777) == "0o600"


def test_downgrade_is_refused_unless_asked_and_rollback_goes_back(fire_v1, fire_v2, keys, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", create=True)
    store.install(fire_v1.path, public_key=keys[1])
    store.install(fire_v2.path, public_key=keys[1])
    with pytest.raises(DowngradeError, match="version 1 is older than version 2"):
        store.install(fire_v1.path, public_key=keys[1])
    assert store.state().current.version == "2"
    rolled = store.rollback()
    assert rolled.current.version == "1" and rolled.previous is None
    with pytest.raises(StoreError, match="nothing to roll back to"):
        store.rollback()
    # The highest version seen survives the rollback: reinstalling v2 is fine, v1 over it refused again.
    store.install(fire_v2.path, public_key=keys[1])
    with pytest.raises(DowngradeError):
        store.install(fire_v1.path, public_key=keys[1])
    assert store.install(fire_v1.path, public_key=keys[1], allow_downgrade=True).entry.version == "1"


def _flip_first_golden_row(golden: dict) -> None:
    probabilities = golden["outputs"]["probabilities"]
    probabilities[0] = probabilities[0][::-1]


def test_a_bundle_that_fails_verification_writes_nothing(fire_v1, keys, other_key_pair, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = ModelStore(store_dir, create=True)
    store.install(fire_v1.path, public_key=keys[1])
    before = store.state()
    tampered = builder.edit_golden(fire_v1.path, tmp_path / "tampered.edgepkg", _flip_first_golden_row)
    resigned = builder.rewrite(fire_v1.path, tmp_path / "other-key.edgepkg", edit=lambda m: m["model"].update(version="7"),
                               signing_key=other_key_pair[0])  # fmt: skip
    for bad, error in ((tampered, runtime.BundleError), (resigned, runtime.SignatureError)):
        with pytest.raises(error):
            store.install(bad, public_key=keys[1], require_signature=True)
    assert store.state() == before
    assert len(list((store_dir / "bundles").iterdir())) == 1


def test_install_cli_exit_codes_and_messages(fire_v1, fire_v2, keys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = edgepack("install", str(fire_v1.path), "--store", str(store))
    assert done.returncode == 2 and "--public-key" in done.stderr  # no silent unsigned install
    done = edgepack("install", str(fire_v2.path), "--store", str(store), "--public-key", str(keys[1]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["current"]["version"] == "2"
    done = edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1]))
    assert done.returncode == 3 and "--allow-downgrade" in done.stderr
    done = edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1]), "--unless-newer")
    assert done.returncode == 0 and "left as is" in done.stdout
    (store / "current.json").write_text("{not json")
    done = edgepack("store", "status", "--store", str(store))
    assert done.returncode == 4 and "not valid JSON" in done.stderr


def _install_paused_then_killed(bundle: Path, store: Path, public_key: Path, step: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "install", str(bundle), "--store", str(store), "--public-key", str(public_key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env({PAUSE_ENV: step}),
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 90
    line = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if f"paused at {step}" in line or not line:
            break
    assert f"paused at {step}" in line, f"install never reached {step}: {line!r} rc={process.poll()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("step", PAUSE_POINTS)
def test_sigkill_at_every_step_of_an_install_leaves_the_old_or_the_new_bundle(fire_v1, fire_v2, keys, tmp_path: Path, step: str) -> None:
    store = tmp_path / "store"
    assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    _install_paused_then_killed(fire_v2.path, store, keys[1], step)
    serving = _serving(store, keys[1])  # never none, never broken: loads, verifies, self-tests
    # Up to the rename of the pointer the old bundle is current; from that rename on, the new one.
    expected = "2" if step == "switched" else "1"
    assert serving.version == expected
    # The next install finishes the job and cleans up what the killed one left.
    done = edgepack("install", str(fire_v2.path), "--store", str(store), "--public-key", str(keys[1]))
    assert done.returncode == 0, done.stderr
    assert _serving(store, keys[1]).version == "2"
    assert list((store / ".staging").iterdir()) == []
    state = ModelStore(store).state()
    assert state.previous is not None and state.previous.version == "1"


def test_sigkill_during_a_first_install_leaves_an_empty_store(fire_v1, keys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _install_paused_then_killed(fire_v1.path, store, keys[1], "pointer_staged")
    assert ModelStore(store).state().current is None  # nothing half-written is ever current
    assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    assert _serving(store, keys[1]).version == "1"
