"""The health gate after a switch: apps that embed the runtime follow the store and count
their predictions; a release whose predictions fail is rolled back on every device."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime.follower import StoreFollower
from tests.runtime import builder
from tests.serve.support import json_rows

from .support import Device, Home, wait_for


@contextmanager
def app(device: Device, rows: list[dict[str, Any]], *, allow_schema_change: bool, public_key: Any) -> Iterator[dict[str, int]]:
    """The device's application: follows the store and predicts a row every 10 ms."""
    follower = StoreFollower(device.store_root, interval=0.1, health=True, allow_schema_change=allow_schema_change,
                             public_key=public_key, require_signature=True).start()
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}

    def work() -> None:
        i = 0
        while not stop.wait(0.01):
            model = follower.model
            try:
                model.predict(rows[i % len(rows)])
                counts["ok"] += 1
            except Exception:  # noqa: BLE001 - the app carries on; the gate sees it
                counts["failed"] += 1
            i += 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()
        follower.stop()


def test_a_release_that_fails_its_health_gate_is_rolled_back_on_every_device_that_took_it(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    rows = json_rows(bundles["v1"].frame, 30)
    devices = [make_device(f"gate-{i}") for i in range(6)]
    v1 = bundles["v1"].bundle.sha256
    with contextlib.ExitStack() as stack:
        # Half the apps accept a schema change (their rows then fail on v3), half refuse to switch.
        for i, device in enumerate(devices):
            stack.enter_context(app(device, rows, allow_schema_change=i % 2 == 0, public_key=keys[1]))
            device.start("--gate-predictions", "15", "--gate-seconds", "30")
        release = home.repo.publish(bundles["v3"].path, public_key=keys[1])
        states = wait_for(lambda: (s := home.device_states(release.release)) and len(s) == 6 and
                          all(v["state"] == "rolled_back" for v in s.values()) and s, 120, what="every device to roll back")
        for i, device in enumerate(devices):
            assert device.current_sha() == v1
            reason = states[device.device_id]["reason"]
            if i % 2 == 0:
                assert "health gate" in reason and "predictions failed" in reason, reason
            else:
                assert "could not switch" in reason and "inputs" in reason, reason
        # Never retaken: after the repository changes (re-signed), every device looks again and refuses.
        home.repo.refresh(force=True)
        wait_for(lambda: all("rejected, release 1" in d.log for d in devices), 30, what="the release to stay rejected")
        assert all(d.current_sha() == v1 for d in devices)


def test_a_healthy_release_passes_its_gate_on_predictions(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    rows = json_rows(bundles["v1"].frame, 30)
    device = make_device("gate-ok")
    with app(device, rows, allow_schema_change=False, public_key=keys[1]) as counts:
        device.start("--gate-predictions", "15", "--gate-seconds", "60")
        release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
        state = wait_for(lambda: (s := home.device_states(release.release).get("gate-ok")) and
                         (s["reason"] or "").startswith("health gate passed") and s, 90, what="the gate to pass")
        assert device.current_sha() == bundles["v2"].bundle.sha256
        passed = int(state["reason"].split(":")[1].split()[0])
        assert passed >= 15 and ", 0 errors" in state["reason"]
        assert counts["failed"] == 0


def test_the_gate_judges_the_change_not_the_errors_an_app_always_had(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    good = json_rows(bundles["v1"].frame, 10)
    # Every other row misses a feature: refused by v1 and by v2 alike (50% errors on both).
    rows = [row if i % 2 else {k: v for k, v in row.items() if k != "region"} for i, row in enumerate(good)]
    device = make_device("sloppy-app")
    with app(device, rows, allow_schema_change=False, public_key=keys[1]) as counts:
        wait_for(lambda: counts["failed"] >= 20, 30, what="the app's errors on v1")
        device.start("--gate-predictions", "20", "--gate-seconds", "60")
        release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
        state = wait_for(lambda: (s := home.device_states(release.release).get("sloppy-app")) and
                         (s["reason"] or "").startswith("health gate passed") and s, 90, what="the gate to pass")
        assert device.current_sha() == bundles["v2"].bundle.sha256
        assert state["state"] == "active"
