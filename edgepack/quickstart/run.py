"""The quickstart, step by step: registry, retraining, bundle, device, collector, report.

Everything runs on embedded defaults inside one folder: a SQLite MLflow registry, a
generated signing key, a SQLite telemetry buffer, and a collector on a free loopback port.
Re-running in the same folder starts the registry, buffer and collector afresh (the
signing key is kept: devices trust it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import handover

MODEL_NAME = "fire-risk"
MODEL_URI = handover.MODEL_URI
_OWNED = ("mlflow.db", "mlartifacts", "history.db", "dist", "predictions.db", "collector.db", "tokens.json", "collector.log",
          handover.REFERENCE_CSV, handover.ROWS_CSV)


@dataclass(kw_only=True)
class QuickstartReport:
    """What the quickstart did and measured; ``render()`` gives the printed report."""

    directory: Path
    decisions: list = field(default_factory=list)
    champion_version: str = ""
    bundle_path: Path | None = None
    bundle_size: int = 0
    bundle_sha256: str = ""
    parity: dict = field(default_factory=dict)
    latency_us_median: float = 0.0
    predictions: int = 0
    flags: Counter = field(default_factory=Counter)
    delivered: int = 0
    collector_records: int = 0
    rollout: list[str] = field(default_factory=list)
    """What the release step did: published, switched without a restart, the health gate."""

    def render(self) -> str:
        lines = [f"edgepack quickstart in {self.directory}", ""]
        lines.append("Registry")
        for d in self.decisions:
            lines.append(f"  - {d.reason}")
        lines.append(f"  production: {MODEL_NAME} version {self.champion_version} (alias champion, stage Production)")
        lines.append("Bundle")
        lines.append(f"  {self.bundle_path}  {self.bundle_size / 1024:.0f} KiB  sha256 {self.bundle_sha256[:16]}…  signed")
        p = self.parity
        lines.append(
            f"  parity: {p.get('rows')} rows, label agreement {p.get('label_agreement', 0):.0%}, "
            f"max abs diff {p.get('max_abs_diff', 0):.1e} (tolerance {p.get('tolerance', {}).get('abs')}, {p.get('precision')})"
        )
        lines.append("Device")
        lines.append(f"  {self.predictions} predictions, single-row latency median {self.latency_us_median:.0f} µs")
        flags = ", ".join(f"{name} ×{count}" for name, count in self.flags.most_common()) or "none"
        lines.append(f"  guardrail flags: {flags}")
        lines.append("Collector")
        lines.append(f"  delivered {self.delivered} records; collector holds {self.collector_records}")
        if self.rollout:
            lines.append("Rollout")
            lines += self.rollout
        lines += handover.render(self.directory)
        return "\n".join(lines)


def run_quickstart(directory: str | os.PathLike[str] = "edgepack-quickstart", *, say: Callable[[str], None] = print) -> QuickstartReport:
    """Run the whole path in ``directory`` and return the report (also printed step by step)."""
    from edgepack.extras import require

    require("packager")
    require("collector")
    import mlflow
    from mlflow.tracking import MlflowClient

    import runtime
    import telemetry
    from packager import build_bundle
    from runtime.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, generate_keypair

    from . import data, retrain

    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for name in _OWNED:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    report = QuickstartReport(directory=root)

    # 1-3. Registry, first version, passive retraining.
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = client.create_experiment(MODEL_NAME, artifact_location=(root / "mlartifacts").as_uri())
    client.create_registered_model(MODEL_NAME)

    last = data.make_season(3000, season="last", seed=1)
    this = data.make_season(3000, season="this", seed=2)
    this_train, holdout = this.iloc[:2000], this.iloc[2000:]

    say("1/7 training version 1 on last season's data")
    v1_model = retrain.train(last, seed=1)
    v1 = retrain.register(client, MODEL_NAME, v1_model, last, experiment_id=experiment_id, season="last")
    v1_auc, _ = retrain.evaluate(v1_model, holdout)
    first = retrain.decide(model=MODEL_NAME, candidate_version=v1, candidate_auc=v1_auc, champion_version=None, champion_auc=None, min_gain=0.0)
    retrain.promote(client, MODEL_NAME, v1, first.reason)
    retrain.record_decision(root / "history.db", first)
    report.decisions.append(first)

    say("2/7 retraining on this season's data; promoting only if better on held-out rows")
    v2_model = retrain.train(this_train, seed=2)
    v2 = retrain.register(client, MODEL_NAME, v2_model, this_train, experiment_id=experiment_id, season="this")
    v2_auc, _ = retrain.evaluate(v2_model, holdout)
    second = retrain.decide(
        model=MODEL_NAME, candidate_version=v2, candidate_auc=v2_auc, champion_version=v1, champion_auc=v1_auc, min_gain=0.005
    )
    if second.promoted:
        retrain.promote(client, MODEL_NAME, v2, second.reason)
    else:
        client.set_model_version_tag(MODEL_NAME, v2, "edgepack.promotion", second.reason)
    retrain.record_decision(root / "history.db", second)
    report.decisions.append(second)
    report.champion_version = client.get_model_version_by_alias(MODEL_NAME, retrain.ALIAS).version

    # The files the README's flow continues with: reference rows for --reference-data and
    # device rows for `predict --input` (one of them from a region never seen in training).
    reference_csv = root / handover.REFERENCE_CSV
    this_train.drop(columns=[data.TARGET]).to_csv(reference_csv, index=False)
    import pandas as pd

    pd.DataFrame(data.device_stream(25, seed=4)[:5]).to_csv(root / handover.ROWS_CSV, index=False)

    # 4. Signed bundle from the alias.
    say(f"3/7 building a signed bundle from {MODEL_URI}")
    keys = root / "keys"
    if not (keys / PRIVATE_KEY_NAME).exists():
        generate_keypair(keys)
    built = build_bundle(
        MODEL_URI,
        root / "dist" / f"{MODEL_NAME}.edgepkg",
        tracking_uri=tracking_uri,
        reference_data=reference_csv,
        signing_key=keys / PRIVATE_KEY_NAME,
    )
    report.bundle_path, report.bundle_sha256 = Path(built.path), built.sha256
    report.bundle_size = Path(built.path).stat().st_size
    report.parity = dict(built.parity)

    # 5. The device: verified load, a stream of predictions, every one buffered.
    say("4/7 loading the bundle as a device would and predicting a stream of rows")
    stream = data.device_stream(500, seed=3)
    with telemetry.Buffer(root / "predictions.db") as buffer:
        model = runtime.load(built.path, public_key=keys / PUBLIC_KEY_NAME, require_signature=True, telemetry=buffer)
        timings = []
        for row in stream:
            start = time.perf_counter_ns()
            result = model.predict(row)
            timings.append(time.perf_counter_ns() - start)
            report.flags.update(flag.split(":")[0] for flag in result.get("flags", ()))
        report.predictions = len(stream)
        report.latency_us_median = statistics.median(timings) / 1000
        buffer.flush()

        # 6. Home: a collector on a free loopback port, one sync, then stop it.
        say("5/7 starting a collector on loopback and syncing the buffered predictions")
        with _collector(root) as (url, token):
            result = telemetry.SyncService(buffer, url, token=token).sync_once()
            if not result.ok:
                raise RuntimeError(f"sync did not complete: {result.error}")
            report.delivered = result.sent
            stats = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            report.collector_records = int(stats["records"])
            # Rollout: the production bundle reaches a running device as a signed release.
            from . import rollout

            say("6/7 publishing the production bundle as a release to a running device on version 1")
            outcome = rollout.demo(root, url=url, built_path=Path(built.path), public_key=keys / PUBLIC_KEY_NAME,
                                   tracking_uri=tracking_uri, reference_csv=reference_csv, signing_key=keys / PRIVATE_KEY_NAME,
                                   rows=stream[:50])
            report.rollout = outcome.lines()
            for line in report.rollout:
                say(line)
    say("7/7 done")
    return report


@contextlib.contextmanager
def _collector(root: Path) -> Iterator[tuple[str, str]]:
    """Run ``edgepack collector`` in a child process on a free loopback port."""
    from home import add_token
    from home.process import CollectorProcess

    device_id = f"quickstart-{secrets.token_hex(3)}"
    token = add_token(root / "tokens.json", device_id)
    child = CollectorProcess(root / "collector.db", root / "tokens.json", root / "collector.log", start_timeout=30)
    try:
        child.start()
        yield child.url, token
    finally:
        try:
            child.stop(timeout=10)
        finally:
            child.kill()
