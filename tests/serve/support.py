"""Helpers of the serve tests: a real ``edgepack serve`` subprocess, its clients, rows."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: this worktree first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def edgepack(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, env=cli_env(env), timeout=timeout, cwd=ROOT
    )


def json_rows(frame: Any, count: int) -> list[dict[str, Any]]:
    rows = frame.head(count).to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def wire(value: Any) -> Any:
    """What a value looks like after a JSON round trip (int labels become string keys)."""
    return json.loads(json.dumps(value))


def v2_inputs(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One V2 tensor per feature, with the datatypes the model's metadata advertises."""
    datatypes = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
    return [
        {"name": f.name, "datatype": datatypes[f.dtype], "shape": [len(rows)], "data": [row[f.name] for row in rows]}
        for f in model.inputs
    ]


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    address: str
    """``unix:PATH`` or ``http://127.0.0.1:PORT``."""
    socket_path: Path | None
    stderr_lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, args: list[str], tmp_path: Path, *, socket: bool = True, env: dict[str, str] | None = None) -> ServeProcess:
        listen: list[str] = []
        socket_path = None
        if socket and "--socket" not in args and "--host" not in args:
            socket_path = tmp_path / f"serve-{len(list(tmp_path.glob('serve-*.sock')))}.sock"
            listen = ["--socket", str(socket_path)]
        elif not socket and "--host" not in args:
            listen = ["--host", "127.0.0.1", "--port", "0"]
        if "--socket" in args:
            socket_path = Path(args[args.index("--socket") + 1])
        process = subprocess.Popen(
            [sys.executable, "-m", "edgepack", "serve", *args, *listen],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(env), cwd=tmp_path,
        )  # fmt: skip
        lines: list[str] = []
        found: dict[str, str] = {}
        ready = threading.Event()

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                lines.append(line)
                match = re.search(r"listening on (\S+),", line)
                if match:
                    found["address"] = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(START_TIMEOUT)
        if "address" not in found:
            process.kill()
            process.wait()
            raise AssertionError(f"edgepack serve did not start (rc {process.returncode}):\n{''.join(lines)}")
        served = cls(process, found["address"], socket_path, lines)
        served.wait_ready()
        return served

    def client(self, timeout: float = 30.0) -> httpx.Client:
        if self.address.startswith("unix:"):
            return httpx.Client(transport=httpx.HTTPTransport(uds=self.address[5:]), base_url="http://edgepack", timeout=timeout)
        return httpx.Client(base_url=self.address, timeout=timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                try:
                    client.get("/v2/health/live")
                    return
                except httpx.TransportError:
                    time.sleep(0.05)
        raise AssertionError("edgepack serve never answered")

    @property
    def log(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def served(value: Any) -> Any:
    """A ``/v1/predict`` answer of a server with ``--buffer``, without the ``record_id`` each
    result then carries (checked to be a str), to compare with a model without telemetry."""
    rows = value if isinstance(value, list) else [value]
    for row in rows:
        assert isinstance(row.pop("record_id"), str), row
    return value
