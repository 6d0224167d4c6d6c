"""The whole path on one device: `edgepack agent` runs serve, sync and the update loop; a
release published at home reaches the running app without a restart, and the records it
sends home carry the new bundle's sha256. A release whose gate fails goes back the same way."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.runtime import builder
from tests.serve.support import json_rows

from .support import ROOT, Device, Home, cli_env, wait_for


def served_shas(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT bundle_sha256 FROM records")}


def test_the_agent_switches_the_running_app_to_a_published_release(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple, tmp_path: Path
) -> None:
    device = make_device("agent-1")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "agent", "--store", str(device.store_root), "--socket", str(sock),
         "--public-key", str(keys[1]), "--db", str(tmp_path / "predictions.db"), "--endpoint", home.url,
         "--token-file", str(device.token_file), "--sync-args", "--interval 0.3", "--updates", str(home.trusted_root),
         "--device-id", "agent-1", "--updates-args", "--interval 0.3 --gate-predictions 10 --gate-seconds 30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT,
    )  # fmt: skip
    rows = json_rows(bundles["v1"].frame, 20)
    v1, v2, v3 = (bundles[k].bundle.sha256 for k in ("v1", "v2", "v3"))
    try:
        wait_for(lambda: sock.exists() or agent.poll() is not None, 60, what="serve's socket")
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://edgepack", timeout=30) as client:
            def predict_until(sha: str) -> bool:
                for row in rows[:5]:
                    client.post("/v1/predict", json=row)
                return sha in served_shas(home.collector.db_path)

            wait_for(lambda: predict_until(v1), 60, interval=0.2, what="v1's records at home")
            release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
            wait_for(lambda: predict_until(v2), 90, interval=0.2, what="v2's records at home")
            state = wait_for(lambda: (s := home.device_states(release.release).get("agent-1")) and
                             (s["reason"] or "").startswith("health gate passed") and s, 60, what="the gate")
            assert state["state"] == "active"
            # v3 needs a feature the app does not send: serve refuses to switch, the gate rolls the store back.
            bad = home.repo.publish(bundles["v3"].path, public_key=keys[1])
            state = wait_for(lambda: (s := home.device_states(bad.release).get("agent-1")) and
                             s["state"] == "rolled_back" and s, 90, interval=0.3, what="the rollback of v3")
            assert device.current_sha() == v2
            assert client.post("/v1/predict", json=rows[0]).status_code == 200
        assert v3 not in served_shas(home.collector.db_path)
        assert agent.poll() is None  # nothing restarted
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    log = agent.stderr.read() if agent.stderr else ""
    assert "started updates" in log
    assert agent.returncode == 0, log[-3000:]
