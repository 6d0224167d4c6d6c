"""``GET /metrics`` in Prometheus text format (prometheus-client).

Gauges are read from the store at scrape time (records stored per model version, devices,
active devices, per-version drift status, per-feature PSI, flag rates over the last 24 h),
so they survive restarts and agree with the reports; the batch-latency histogram is
observed by ``BatchTiming`` around ``POST /v1/batches`` in this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector as _PromCollector

from .drift import STATUSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_VALUE = {"no_data": -1, "low_data": -1, "ok": 0, "warn": 1, "alert": 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BatchTiming:
    """ASGI middleware: observes the wall time of every ``POST /v1/batches`` by answer status."""

    def __init__(self, app: Any, registry: CollectorRegistry | None = None) -> None:
        self.app = app
        self.registry = registry or CollectorRegistry()
        self.histogram = Histogram(
            "edgepack_batch_seconds",
            "Time from request to answer of POST /v1/batches, by HTTP status",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/v1/batches" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.histogram.labels(str(status["code"])).observe(time.perf_counter() - started)


class _Snapshot(_PromCollector):
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return iter(self.families)


def families(fleet: dict[str, Any], reports: list[dict[str, Any]], stats: dict[str, Any]) -> list[Any]:
    """Gauge families from the fleet, the per-model reports and the store's stats."""
    records = GaugeMetricFamily("edgepack_records_stored", "Records stored at home, by model and version", labels=["model", "version"])
    for model, versions in sorted(stats.get("by_model", {}).items()):
        for version, count in sorted(versions.items()):
            records.add_metric([model, version], count)
    total = GaugeMetricFamily("edgepack_records_stored_total", "Records stored at home, all models")
    total.add_metric([], stats.get("records", 0))
    devices = GaugeMetricFamily("edgepack_devices", "Devices that have sent at least one batch")
    devices.add_metric([], len(fleet["devices"]))
    active = GaugeMetricFamily("edgepack_active_devices", f"Devices seen within the last {fleet['active_seconds']} s")
    active.add_metric([], fleet["active"])
    status = GaugeMetricFamily(
        "edgepack_drift_status", "Worst drift status of a version over the last 24 h: -1 no/low data, 0 ok, 1 warn, 2 alert",
        labels=["model", "version"],
    )
    psi = GaugeMetricFamily("edgepack_drift_psi", "PSI of a feature (or the prediction) against the bundle's baseline, last 24 h",
                            labels=["model", "version", "bundle", "feature"])
    flags = GaugeMetricFamily("edgepack_flag_rate", "Share of records carrying a guardrail flag, last 24 h",
                              labels=["model", "version", "bundle", "flag"])
    quality = GaugeMetricFamily(
        "edgepack_live_metric", "Live model quality from labeled records over the last 24 h (accuracy, roc_auc, mae, rmse)",
        labels=["model", "version", "metric"],
    )
    labeled = GaugeMetricFamily("edgepack_labeled_records", "Records with a label over the last 24 h", labels=["model", "version"])
    for report in reports:
        for version in report["versions"]:
            overall = version["live"].get("overall") or {}
            labeled.add_metric([report["model"], version["version"]], version["live"].get("labeled", 0))
            for metric in ("accuracy", "roc_auc", "mae", "rmse"):
                if overall.get(metric) is not None:
                    quality.add_metric([report["model"], version["version"], metric], overall[metric])
            status.add_metric([report["model"], version["version"]], STATUS_VALUE.get(version["status"], -1))
            for sha, bundle in version["bundles"].items():
                for name, entry in bundle["features"].items():
                    if entry.get("psi") is not None:
                        psi.add_metric([report["model"], version["version"], sha[:12], name], entry["psi"])
                if bundle["prediction"] is not None and bundle["prediction"].get("psi") is not None:
                    psi.add_metric([report["model"], version["version"], sha[:12], "(prediction)"], bundle["prediction"]["psi"])
                for flag, entry in bundle["flags"].items():
                    flags.add_metric([report["model"], version["version"], sha[:12], flag], entry["rate"])
    return [records, total, devices, active, status, psi, flags, quality, labeled]


def exposition(latency: CollectorRegistry | None, gauges: list[Any]) -> bytes:
    """The text exposition: the gauges of this scrape, then the latency histogram."""
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(gauges))
    body = generate_latest(snapshot)
    if latency is not None:
        body += generate_latest(latency)
    return body


__all__ = ["BatchTiming", "CONTENT_TYPE", "CollectorRegistry", "STATUSES", "exposition", "families"]
