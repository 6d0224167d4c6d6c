"""Staged rollout on a fleet of real device processes against a real home service."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tests.runtime import builder

from .support import Device, Home, wait_for

FLEET = [f"edge-{i}" for i in range(24)]


def selected(device_id: str, release: int, percent: float) -> bool:
    # The rule of docs/rollout.md, written out again here rather than imported.
    digest = hashlib.sha256(f"{device_id}\n{release}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < percent


def test_ten_then_hundred_percent_switches_exactly_the_selected_devices(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    devices = [make_device(name) for name in FLEET]
    for device in devices:
        device.start("--gate-seconds", "1")
    v1, v2 = bundles["v1"].bundle.sha256, bundles["v2"].bundle.sha256
    release = home.repo.publish(bundles["v2"].path, channel="stable", rollout=10.0, public_key=keys[1])
    expected = {d.device_id for d in devices if selected(d.device_id, release.release, 10.0)}
    assert 0 < len(expected) < len(FLEET)  # the sample must tell the two groups apart

    wait_for(lambda: all(d.current_sha() == v2 for d in devices if d.device_id in expected), 120, what="the 10% to switch")
    # Every other device has seen the release and decided it is not for it.
    wait_for(lambda: all("not_selected, release 1" in d.log for d in devices if d.device_id not in expected), 60,
             what="the other 90% to decide")
    assert {d.device_id for d in devices if d.current_sha() == v2} == expected
    assert all(d.current_sha() == v1 for d in devices if d.device_id not in expected)
    states = wait_for(lambda: (s := home.device_states(release.release)) and
                      all(s.get(d, {}).get("reason", "").startswith("health gate passed") for d in expected) and s, 60,
                      what="the reports home")
    assert set(states) == expected

    home.repo.promote(channel="stable", rollout=100.0)
    wait_for(lambda: all(d.current_sha() == v2 for d in devices), 180, what="the whole fleet to switch")
    states = wait_for(lambda: (s := home.device_states(release.release)) and len(s) == len(FLEET) and
                      all(v["state"] == "active" for v in s.values()) and s, 60, what="every report")
    assert set(states) == set(FLEET)
    for device in devices:
        assert device.process is not None and device.process.poll() is None, device.log


def test_a_halted_release_reaches_no_new_device_and_a_rollback_release_goes_back(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    a, b = make_device("edge-12"), make_device("edge-3")
    v1, v2 = bundles["v1"].bundle.sha256, bundles["v2"].bundle.sha256
    first = home.repo.publish(bundles["v1"].path, public_key=keys[1])  # what the fleet already runs
    second = home.repo.publish(bundles["v2"].path, rollout=10.0, public_key=keys[1])
    assert (first.release, second.release) == (1, 2)
    assert selected("edge-12", 2, 10.0) and not selected("edge-3", 2, 10.0)
    for device in (a, b):
        device.start("--gate-seconds", "1")
    wait_for(lambda: a.current_sha() == v2, 60, what="the canary")
    wait_for(lambda: "not_selected, release 2" in b.log, 60, what="the other device to decide")
    home.repo.halt(channel="stable")
    wait_for(lambda: "halted, release 2" in b.log, 60, what="the halt to be seen")
    assert b.current_sha() == v1 and a.current_sha() == v2
    # A rollback is a new release (3) of the v1 bundle: an older model, but signed as a rollback.
    rollback = home.repo.rollback(channel="stable")
    assert rollback.release == 3 and rollback.bundle_sha256 == v1 and rollback.kind == "rollback"
    wait_for(lambda: a.current_sha() == v1, 60, what="the rollback release")
    wait_for(lambda: "current, release 3" in b.log, 60, what="the other device to see it holds it already")
    assert b.current_sha() == v1
    # The canary reports "downloaded" before its health gate and "active" after it: wait for the last word.
    states = wait_for(lambda: (s := home.device_states(3)) and len(s) == 2 and
                      all(v["state"] == "active" for v in s.values()) and s, 60, what="both devices active on release 3")
    assert set(states) == {"edge-12", "edge-3"}


def test_a_release_for_named_devices_reaches_only_them(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    devices = [make_device(name) for name in ("canary-a", "canary-b", "plain-c")]
    release = home.repo.publish(bundles["v2"].path, rollout=0.0, devices=("canary-a", "canary-b"), public_key=keys[1])
    outcomes = {d.device_id: d.once("--once", "--gate-seconds", "0")[1]["outcome"] for d in devices}
    assert outcomes == {"canary-a": "gate_passed", "canary-b": "gate_passed", "plain-c": "not_selected"}
    assert [d.current_sha() == bundles["v2"].bundle.sha256 for d in devices] == [True, True, False]
    assert set(home.device_states(release.release)) == {"canary-a", "canary-b"}
