"""A real home service (collector + release repository) and real device update loops on loopback.

``Home``: a collector subprocess serving a ``ReleaseRepository`` in its directory, an admin
token, and ``add_device`` for device tokens. ``Device``: a model store with v1 installed
(the standalone path, as ``edgepack install`` does), its token file, and ``start()`` for an
``edgepack updates`` subprocess polling the home service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from home import add_token
from home.process import CollectorProcess
from home.releases import ReleaseRepository
from runtime.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def edgepack(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, env=cli_env(env),
                          timeout=timeout, cwd=ROOT)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Home:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.repo = ReleaseRepository.create(directory / "releases")
        self.tokens_path = directory / "tokens.json"
        self.admin_token = add_token(self.tokens_path, "admin", admin=True)
        self.collector = CollectorProcess(
            directory / "collector.db", self.tokens_path, directory / "collector.log",
            options={"releases": directory / "releases"}, cwd=ROOT,
        )
        self.collector.start()

    @property
    def url(self) -> str:
        return self.collector.url

    @property
    def trusted_root(self) -> Path:
        return self.repo.metadata_dir / "1.root.json"

    def add_device(self, device_id: str) -> str:
        return add_token(self.tokens_path, device_id)

    def fleet(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/releases/fleet", headers={"authorization": f"Bearer {self.admin_token}"}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def device_states(self, release: int) -> dict[str, dict[str, Any]]:
        for entry in self.fleet()["releases"]:
            if entry["release"] == release:
                return entry["devices"]
        return {}

    def stop(self) -> None:
        self.collector.stop()


class Device:
    def __init__(self, home: Home, directory: Path, device_id: str, *, initial: Path, public_key: Path) -> None:
        self.home = home
        self.device_id = device_id
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.store_root = directory / "store"
        self.public_key = public_key
        ModelStore(self.store_root, create=True).install(initial, public_key=public_key, require_signature=True)
        self.token_file = directory / "token"
        self.token_file.write_text(home.add_device(device_id))
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.store_root)

    def current_sha(self) -> str | None:
        current = self.store.state().current
        return None if current is None else current.sha256

    def args(self, *extra: str) -> list[str]:
        return [
            "updates", "--store", str(self.store_root), "--endpoint", self.home.url, "--token-file", str(self.token_file),
            "--device-id", self.device_id, "--trusted-root", str(self.home.trusted_root), "--public-key", str(self.public_key),
            *extra,
        ]

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Device:
        args = self.args(*extra)
        if "--interval" not in extra:
            args += ["--interval", "0.3"]
        self.lines = []
        self.process = subprocess.Popen([sys.executable, "-m", "edgepack", *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env=cli_env(env), cwd=ROOT)

        def pump(process: subprocess.Popen[str]) -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.lines.append(line)

        threading.Thread(target=pump, args=(self.process,), daemon=True).start()
        return self

    def once(self, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
        out = edgepack(*self.args(*extra), env=env)
        result = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
        return out.returncode, result, out.stderr

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_paused(self, step: str, timeout: float = 60.0) -> None:
        wait_for(lambda: f"paused at {step}" in self.log or (self.process and self.process.poll() is not None), timeout,
                 what=f"pause at {step}")
        assert f"paused at {step}" in self.log, self.log

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
