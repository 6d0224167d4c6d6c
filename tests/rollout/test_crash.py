"""SIGKILL at every step of an update: the device is on the old bundle or the new one, never
on none or a broken one, and the next run finishes the update (resuming a download)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import runtime
from runtime.store import PAUSE_ENV
from tests.runtime import builder

from .support import Device, Home, wait_for

STEPS = ["downloading", "downloaded", "verified", "staged", "stored", "pointer_staged", "switched"]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_leaves_old_or_new_and_the_next_run_completes(
    step: str, home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("crashy")
    v1, v2 = bundles["v1"].bundle.sha256, bundles["v2"].bundle.sha256
    release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
    device.start("--gate-seconds", "1", env={PAUSE_ENV: step})
    device.wait_paused(step)
    device.kill()

    current = device.current_sha()
    assert current in (v1, v2)
    if step in ("downloading", "downloaded", "verified", "staged", "stored"):
        assert current == v1
    if step == "switched":
        assert current == v2
    model = runtime.load(device.store.path_of(device.store.state().current), public_key=keys[1], require_signature=True)
    assert model.sha256 == current

    device.start("--gate-seconds", "1")
    wait_for(lambda: device.current_sha() == v2, 60, what="the update to complete after the crash")
    state = wait_for(lambda: (s := home.device_states(release.release).get("crashy")) and
                     (s["reason"] or "").startswith("health gate passed") and s, 60, what="the gate to pass")
    assert state["state"] == "active"
    if step == "downloading":
        resumed = [line for line in device.log.splitlines() if "resuming the download" in line]
        assert resumed, device.log
        have, total = (int(x) for x in resumed[0].split(" at ")[1].split(" bytes")[0].split(" of "))
        assert 0 < have < total
    assert not list((device.store_root / ".staging").glob("*")), "staging is cleaned once the update is in"
