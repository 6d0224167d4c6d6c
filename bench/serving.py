"""``edgepack serve`` against in-process ``predict(dict)``: round trip over the unix socket and
loopback TCP (p50, p99), and throughput with 1, 4 and 16 concurrent clients.

The server is a real ``edgepack serve`` subprocess. The client is as thin as an app's
would be in C or Go: one keep-alive connection per client, request bytes encoded in
advance, the response read up to its Content-Length; so the figure is what serve adds,
not what a Python HTTP library costs.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .figures import Figure, Report, Target, error_figure, timing_figure
from .inference import DISTINCT_ROWS, native_rows
from .options import BenchOptions
from .zoo import ModelCase

SECTION = "serve"
IN_PROCESS = "in-process predict(dict)"
UNIX = "serve /v1/predict, unix socket"
TCP = "serve /v1/predict, loopback TCP"
UNIX_V2 = "serve V2 infer, unix socket"
ADDED = "added over in-process, unix socket"
CONCURRENCY = (1, 4, 16)
ADDED_TARGET_US = 150.0


class _Client:
    """One keep-alive HTTP/1.1 connection with pre-encoded requests."""

    def __init__(self, address: str) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(address[5:])
        else:
            host, port = address.removeprefix("http://").rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buffer = self.pending
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("serve closed the connection")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("serve closed the connection")
            rest += chunk
        self.pending = rest[length:]
        return status, rest[:length]

    def close(self) -> None:
        self.sock.close()


def _request(path: str, body: Any) -> bytes:
    data = json.dumps(body).encode()
    return b"POST %s HTTP/1.1\r\nhost: edgepack\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        path.encode(),
        len(data),
        data,
    )


def _start(bundle: Path, listen: list[str], root: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "serve", str(bundle), "--allow-unsigned", "--log-level", "warning", *listen],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"listening on (\S+),", line)
        if match:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            return process, match.group(1)
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"edgepack serve did not start (rc {process.poll()})")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _v2_body(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    datatypes = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
    return {"inputs": [{"name": f.name, "datatype": datatypes[f.dtype], "shape": [1], "data": [row[f.name]]} for f in model.inputs]}


def _latencies(calls: int, fn: Any) -> list[float]:
    times = []
    for i in range(calls):
        began = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - began)
    return times


def _throughput(address: str, requests: list[bytes], clients: int, per_client: int) -> tuple[float, float, int, int]:
    """(requests/s over all clients, the rate at the p99 request time, requests made, errors)."""
    errors = [0] * clients
    times: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def run(index: int) -> None:
        client = _Client(address)
        try:
            barrier.wait()
            for i in range(per_client):
                try:
                    began = time.perf_counter()
                    status, _ = client.call(requests[(index + i) % len(requests)])
                    times[index].append(time.perf_counter() - began)
                except OSError:
                    errors[index] += 1
                    client.close()
                    client = _Client(address)
                    continue
                if status != 200:
                    errors[index] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    total = clients * per_client
    every = sorted(t for per in times for t in per)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))] if every else float("nan")
    return total / elapsed, clients / p99, total, sum(errors)


def measure_serve(case: ModelCase, options: BenchOptions, root: Path) -> list[Figure]:
    import runtime

    if case.bundle is None:
        return [error_figure(section=SECTION, path=UNIX, unit="us", error=case.bundle_error or "no bundle", model=case.name)]
    model = runtime.load(case.bundle)
    rows = native_rows(case.frame, DISTINCT_ROWS)
    v1 = [_request("/v1/predict", row) for row in rows]
    v2 = [_request(f"/v2/models/{model.name}/infer", _v2_body(model, row)) for row in rows]
    calls = max(50, options.latency_rounds * options.latency_calls)
    warmup = max(10, options.latency_warmup)
    work = root / "serve-bench"
    work.mkdir(exist_ok=True)
    unix_server, unix_address = _start(case.bundle, ["--socket", str(work / "bench.sock")], work)
    tcp_server, tcp_address = _start(case.bundle, ["--host", "127.0.0.1", "--port", "0"], work)
    figures: list[Figure] = []
    try:
        unix, tcp = _Client(unix_address), _Client(tcp_address)
        for i in range(warmup):
            unix.call(v1[i % len(v1)])
            tcp.call(v1[i % len(v1)])
            unix.call(v2[i % len(v2)])
            model.predict(rows[i % len(rows)])
        samples: dict[str, list[float]] = {IN_PROCESS: [], UNIX: [], TCP: [], UNIX_V2: []}
        # Interleaved rounds: a burst of load on the shared machine hits every path alike.
        rounds = 10
        per_round = max(5, calls // rounds)
        for _ in range(rounds):
            samples[IN_PROCESS] += _latencies(per_round, lambda i: model.predict(rows[i % len(rows)]))
            samples[UNIX] += _latencies(per_round, lambda i: unix.call(v1[i % len(v1)]))
            samples[TCP] += _latencies(per_round, lambda i: tcp.call(v1[i % len(v1)]))
            samples[UNIX_V2] += _latencies(per_round, lambda i: unix.call(v2[i % len(v2)]))
        unix.close()
        tcp.close()
        notes = {
            IN_PROCESS: "EdgeModel.predict on one dict, in this process",
            UNIX: "one keep-alive connection, request bytes prepared in advance, response read to Content-Length",
            TCP: "as the unix socket, over 127.0.0.1 with TCP_NODELAY",
            UNIX_V2: "Open Inference Protocol infer, one row as one tensor per feature",
        }
        for path, seconds in samples.items():
            figures.append(timing_figure(section=SECTION, path=path, seconds=seconds, unit="us", model=case.name, note=notes[path]))
        base = figures[0]
        unix_figure = figures[1]
        added = unix_figure.median - base.median  # type: ignore[operator]
        figures.append(
            Figure(
                section=SECTION, path=ADDED, unit="us", model=case.name, median=added,
                p99=unix_figure.p99 - base.p99, samples=unix_figure.samples,  # type: ignore[operator]
                note="serve over the unix socket minus in-process predict(dict), medians (and p99s)",
            )
        )  # fmt: skip
        for clients in CONCURRENCY:
            per_client = max(40, (4 * calls) // clients)  # the same number of requests at every level
            rate, p99_rate, total, errors = _throughput(unix_address, v1, clients, per_client)
            figures.append(
                Figure(
                    section=SECTION, path=f"throughput, {clients} concurrent client(s), unix socket", unit="rows/s", model=case.name,
                    median=rate, p99=p99_rate, samples=total,
                    note=f"{total} single-row /v1/predict requests, {errors} failed; p99: {clients} clients at the p99 request time",
                )
            )  # fmt: skip
    finally:
        _stop(unix_server)
        _stop(tcp_server)
    return figures


def targets(report: Report) -> list[Target]:
    """The issue's serve targets, from this run's figures."""
    found = []
    for figure in report.figures:
        if figure.section != SECTION or not figure.ok:
            continue
        if figure.path == ADDED:
            target = Target(
                name=f"serve_added_latency[{figure.model}]",
                description=f"serve over the unix socket adds at most {ADDED_TARGET_US:g} µs p50 over in-process predict(dict) ({figure.model})",
                value=figure.median, threshold=ADDED_TARGET_US, comparison="<=", unit="us",
                detail="median round trip minus median in-process call",
            )  # fmt: skip
        elif figure.path.startswith("throughput, 16 "):
            errors = int(re.search(r"(\d+) failed", figure.note or "0 failed").group(1))  # type: ignore[union-attr]
            target = Target(
                name=f"serve_16_clients_no_error[{figure.model}]",
                description=f"no failed request with 16 concurrent clients ({figure.model})",
                value=float(errors), threshold=0.0, comparison="<=", unit="errors", detail=figure.note,
            )  # fmt: skip
        else:
            continue
        figure.target, figure.verdict = target.name, target.verdict
        found.append(target)
    return found
