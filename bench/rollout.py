"""Rollout: a fleet polling the home service for releases, and how long a release takes to land.

Two measurements against a real collector process serving a real release repository:

1. **Polling.** ``devices`` simulated devices (1,000) each poll every ``interval`` (10 s), spread
   evenly over the interval, for ``duration`` seconds. A poll is what the update loop sends
   when nothing changed: the conditional ``GET timestamp.json`` with the device's own token
   and ``If-None-Match`` (``HttpxFetcher.poll_timestamp``), answered 304. Each device has its
   own client, so idle connections close between polls (the collector keeps them 5 s) and
   most polls open a new TCP connection, as real devices would. Reported: requests/s
   answered, the round trip, and the collector's CPU per poll and share of one core (from
   /proc: user + system time of the collector process over the window).
2. **Publish to active.** ``fleet`` devices run the real ``UpdateLoop`` (in this process, one
   thread each, each with its own model store on v1) polling every ``fleet_interval``; the
   clock runs from ``ReleaseRepository.publish`` until every store points at the new bundle.
   The devices' own work (download, verification, self-test, install) shares this machine's
   two cores here, where each device would have its own CPU: the figure is an upper bound.

The load generator runs on the same machine as the collector, so both compete for cores.
"""

from __future__ import annotations

import heapq
import threading
import time
from pathlib import Path
from typing import Any

from .figures import Figure, Report, Target, error_figure, timing_figure
from .options import BenchOptions
from .timing import cpu_seconds

SECTION = "rollout"
POLL = "no-change poll (304), round trip"
RATE = "polls answered"
CPU = "collector CPU per poll"
SHARE = "collector CPU, share of one core"
ACTIVE = "publish until every polling device is active"
CPU_SHARE_TARGET = 0.5
"""'With CPU to spare': the collector uses at most half of one core for the fleet's polls."""


def _sizes(options: BenchOptions) -> dict[str, Any]:
    if options.mode == "full":
        return {"devices": 1000, "interval": 10.0, "duration": 30.0, "fleet": 50, "fleet_interval": 10.0}
    return {"devices": 1000, "interval": 10.0, "duration": 6.0, "fleet": 8, "fleet_interval": 1.0}


def _write_tokens(path: Path, names: list[str]) -> dict[str, str]:
    """Tokens for ``names`` in the collector's tokens format, in one write (``add_token`` rewrites the file per call)."""
    import json
    import secrets

    from home.tokens import FORMAT, TOKEN_PREFIX, VERSION, digest

    tokens = {name: TOKEN_PREFIX + secrets.token_urlsafe(32) for name in names}
    document = {"format": FORMAT, "version": VERSION, "devices": {n: {"sha256": digest(t), "added": time.time()} for n, t in tokens.items()}}
    path.write_text(json.dumps(document))
    return tokens


def measure_rollout(case: Any, options: BenchOptions, root: Path) -> list[Figure]:
    from home import add_token
    from home.process import CollectorProcess
    from home.releases import ReleaseRepository

    sizes = _sizes(options)
    work = root / "rollout"
    work.mkdir()
    repo = ReleaseRepository.create(work / "releases")
    names = [f"bench-{i:04d}" for i in range(sizes["devices"])]
    tokens = _write_tokens(work / "tokens.json", names)
    add_token(work / "tokens.json", "ops", admin=True)
    collector = CollectorProcess(work / "collector.db", work / "tokens.json", work / "collector.log",
                                 options={"releases": work / "releases"}, start_timeout=60)
    collector.start()
    figures: list[Figure] = []
    try:
        repo.publish(case.bundle)
        figures += _measure_polls(collector, tokens, sizes)
        figures.append(_measure_publish(collector, repo, case, sizes, work, tokens))
    finally:
        collector.stop()
    return figures


def _measure_polls(collector: Any, tokens: dict[str, str], sizes: dict[str, Any]) -> list[Figure]:
    from edgepack.updates.fetcher import HttpxFetcher

    url = f"{collector.url}/v1/tuf/metadata/timestamp.json"
    fetchers = [HttpxFetcher(token, timeout=30) for token in tokens.values()]
    for fetcher in fetchers:  # the first poll of each device: 200 with the ETag it keeps
        fetcher.poll_timestamp(url, 16384)
    interval, duration = sizes["interval"], sizes["duration"]
    start = time.monotonic() + 0.5
    queue = [(start + interval * i / len(fetchers), i) for i in range(len(fetchers))]
    heapq.heapify(queue)
    lock = threading.Lock()
    seconds: list[float] = []
    failures: list[str] = []
    end = start + duration

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                due, index = heapq.heappop(queue)
                if due >= end:
                    return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            began = time.perf_counter()
            try:
                changed = fetchers[index].poll_timestamp(url, 16384)
                if changed:
                    failures.append("answered 200 where nothing changed")
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{type(exc).__name__}: {exc}")
            took = time.perf_counter() - began
            with lock:
                seconds.append(took)
                heapq.heappush(queue, (due + interval, index))

    pid = collector.process.pid
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    for fetcher in fetchers:
        fetcher.close()
    if not seconds:
        return [error_figure(section=SECTION, path=POLL, unit="ms", error="no poll completed")]
    polls = len(seconds)
    note = f"{len(tokens)} devices every {interval:g} s for {wall:.1f} s; {len(failures)} failed" + (
        f" (first: {failures[0]})" if failures else "")
    rate = polls / wall
    return [
        timing_figure(section=SECTION, path=POLL, seconds=seconds, unit="ms", note=note),
        Figure(section=SECTION, path=RATE, unit="req/s", median=rate, p99=rate, samples=polls, note=note),
        Figure(section=SECTION, path=CPU, unit="us", median=cpu / polls * 1e6, p99=cpu / polls * 1e6, samples=polls,
               note="user + system time of the collector process over the window, divided by the polls answered"),
        Figure(section=SECTION, path=SHARE, unit="cores", median=cpu / wall, p99=cpu / wall, samples=polls, note=note),
    ]


def _measure_publish(collector: Any, repo: Any, case: Any, sizes: dict[str, Any], work: Path, tokens: dict[str, str]) -> Figure:
    from edgepack.updates import GateOptions, UpdateLoop, UpdateOptions
    from runtime.store import ModelStore

    names = list(tokens)[: sizes["fleet"]]
    current = repo.channels()["stable"]
    loops = []
    for name in names:
        store = ModelStore(work / "devices" / name, create=True)
        store.install(case.bundle)
        loop = UpdateLoop(UpdateOptions(store=store.root, endpoint=collector.url, token=tokens[name], device_id=name,
                                        trusted_root=repo.metadata_dir / "1.root.json", allow_unsigned=True,
                                        interval=sizes["fleet_interval"], gate=GateOptions(seconds=0)))
        loop.poll_once()  # settled on the release it already runs
        loops.append(loop)
    stop = threading.Event()
    threads = [threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    # The same model again under another version: a new bundle to roll out.
    second = work / "second.edgepkg"
    _rebuild_as_next_version(case.bundle, second, current.version)
    began = time.monotonic()
    release = repo.publish(second)
    deadline = began + 120 + sizes["fleet_interval"] * 3
    pending = set(range(len(loops)))
    while pending and time.monotonic() < deadline:
        for index in list(pending):
            state = loops[index].store.state().current
            if state is not None and state.sha256 == release.bundle_sha256:
                pending.discard(index)
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    stop.set()
    for thread in threads:
        thread.join(30)
    for loop in loops:
        loop.close()
    if pending:
        return error_figure(section=SECTION, path=ACTIVE, unit="s", error=f"{len(pending)} of {len(loops)} devices not active after {elapsed:.0f} s")
    return Figure(section=SECTION, path=ACTIVE, unit="s", median=elapsed, p99=elapsed, samples=len(loops),
                  note=f"{len(loops)} devices polling every {sizes['fleet_interval']:g} s (real UpdateLoop: TUF refresh, "
                       "download, verification, self-test, install), all on this machine's cores")


def _rebuild_as_next_version(source: Path, target: Path, version: str) -> None:
    """The bundle with its registry version raised by one (unsigned: the bench installs with allow_unsigned)."""
    import json

    from runtime.bundle import read_bundle, write_bundle

    bundle = read_bundle(source)
    manifest = json.loads(bundle.manifest_bytes)
    manifest["model"]["version"] = str(int(version) + 1)
    files = {name: data for name, data in bundle.files.items() if name not in ("manifest.json", "manifest.sig")}
    write_bundle(target, manifest, files)


def targets(report: Report) -> list[Target]:
    found = []
    for figure in report.figures:
        if figure.section == SECTION and figure.path == SHARE and figure.ok:
            target = Target(
                name="rollout_1000_devices_cpu_to_spare",
                description=f"the collector answers 1,000 devices polling every 10 s on at most {CPU_SHARE_TARGET:g} of one core",
                value=figure.median, threshold=CPU_SHARE_TARGET, comparison="<=", unit="cores", detail=figure.note,
            )
            figure.target, figure.verdict = target.name, target.verdict
            found.append(target)
    return found
