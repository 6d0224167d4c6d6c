"""``edgepack agent``: serve and sync as one supervised pair, against a real collector."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

import runtime

from .support import ServeProcess, cli_env, edgepack, served, wire


def _wait_for_socket(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://edgepack") as client:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
            except httpx.TransportError:
                pass
        assert process.poll() is None, f"the agent exited with {process.returncode}"
        time.sleep(0.1)
    raise AssertionError("serve never became ready under the agent")


def test_the_agent_serves_records_and_syncs_then_stops_cleanly(collector, fire_v1, keys, rows, tmp_path: Path) -> None:
    store, db, sock = tmp_path / "store", tmp_path / "predictions.db", tmp_path / "agent.sock"
    token = tmp_path / "token"
    token.write_text(collector.token)
    assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "agent", "--store", str(store), "--socket", str(sock), "--public-key", str(keys[1]),
         "--db", str(db), "--endpoint", collector.url, "--token-file", str(token), "--sync-args", "--interval 0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip
    try:
        _wait_for_socket(sock, agent)
        model = runtime.load(fire_v1.path, public_key=keys[1])
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://edgepack") as client:
            assert served(client.post("/v1/predict", json=rows[:6]).json()) == wire(model.predict(rows[:6]))
        deadline = time.monotonic() + 60
        while len(collector.records()) < 6:
            assert time.monotonic() < deadline, "the agent's sync never delivered the predictions"
            time.sleep(0.2)
        stored = collector.records()
        assert len(stored) == 6 and {r["bundle_sha256"] for r in stored} == {model.sha256}
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    log = agent.stderr.read() if agent.stderr else ""
    assert agent.returncode == 0, log
    assert "started serve" in log and "started sync" in log
    assert not sock.exists()  # serve removed its socket on the way out


def test_when_a_child_dies_the_agent_stops_the_other_and_reports_it(fire_v1, keys, tmp_path: Path) -> None:
    store, sock = tmp_path / "store", tmp_path / "agent.sock"
    assert edgepack("install", str(fire_v1.path), "--store", str(store), "--public-key", str(keys[1])).returncode == 0
    missing_token = tmp_path / "no-such-token"
    done = subprocess.run(
        [sys.executable, "-m", "edgepack", "agent", "--store", str(store), "--socket", str(sock), "--public-key", str(keys[1]),
         "--db", str(tmp_path / "p.db"), "--endpoint", "http://127.0.0.1:9", "--token-file", str(missing_token)],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # sync's usage error, passed on
    assert "sync exited with status 2; stopping the others" in done.stderr


def test_socket_group_gives_one_group_access(serve_process, fire_v1, keys, tmp_path: Path) -> None:
    gid = 4242 if os.getgid() != 4242 else 4243
    served = serve_process(str(fire_v1.path), "--public-key", str(keys[1]), "--socket", str(tmp_path / "g.sock"), "--socket-group", str(gid))
    st = os.stat(served.socket_path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid
    done = edgepack("serve", str(fire_v1.path), "--public-key", str(keys[1]), "--socket", str(tmp_path / "h.sock"),
                    "--socket-group", "no-such-group-here")  # fmt: skip
    assert done.returncode == 2 and "no such group" in done.stderr
    assert not (tmp_path / "h.sock").exists()


def test_serve_refuses_to_start_in_unsafe_ways(fire_v1, keys, tmp_path: Path) -> None:
    occupied = tmp_path / "busy.sock"
    running = ServeProcess.start([str(fire_v1.path), "--public-key", str(keys[1]), "--socket", str(occupied)], tmp_path)
    try:
        cases = [
            (["--socket", str(occupied)], "already listening"),
            (["--host", "0.0.0.0"], "not loopback"),
            ([], "exactly one"),
        ]
        for extra, words in cases:
            done = edgepack("serve", str(fire_v1.path), "--public-key", str(keys[1]), *extra)
            assert done.returncode == 2 and words in done.stderr, done.stderr
        regular = tmp_path / "file.txt"
        regular.write_text("keep me")
        done = edgepack("serve", str(fire_v1.path), "--public-key", str(keys[1]), "--socket", str(regular))
        assert done.returncode == 2 and "not a socket" in done.stderr and regular.read_text() == "keep me"
        done = edgepack("serve", str(fire_v1.path), "--socket", str(tmp_path / "x.sock"))
        assert done.returncode == 2 and "--allow-unsigned" in done.stderr
    finally:
        running.stop()


def test_serve_without_uvicorn_names_the_pip_command(fire_v1, keys, tmp_path: Path) -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'uvicorn':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = ['edgepack', 'serve', {str(fire_v1.path)!r}, '--public-key', {str(keys[1])!r}, '--socket', {str(tmp_path / 's.sock')!r}]\n"
        "from edgepack.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'uvicorn>=0.29' 'httptools>=0.6' 'uvloop>=0.19'" in done.stderr
