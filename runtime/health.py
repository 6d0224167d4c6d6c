"""What the serving side tells the update loop's health gate: predictions, errors and flags per bundle.

A process that serves from a model store (``edgepack serve --store``, or an app with
``StoreFollower(store, health=True)``) counts, per bundle sha256, the rows it predicted,
the rows whose call raised (``InputError``, ``PredictionError``...) and the rows that came
back with guardrail flags, and whether it could load the bundle at all. It writes these
counters to ``STORE/.health/<pid>.json`` (atomically, at most every ``interval`` seconds);
the update loop (another process) sums every file to decide whether a new bundle is
healthy. Counting is a few integer additions per call; nothing is written per prediction.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

HEALTH_DIR = ".health"
FORMAT = 1


class HealthProbe:
    """Counters per bundle sha256, flushed to a file of this process."""

    def __init__(self, store_root: str | os.PathLike[str], *, interval: float = 0.5) -> None:
        self.dir = Path(store_root) / HEALTH_DIR
        self.path = self.dir / f"{os.getpid()}.json"
        self.interval = interval
        self._counts: dict[str, list[int]] = {}
        self._load_errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._written = 0.0

    def observe(self, sha256: str, *, rows: int, errors: int = 0, flagged: int = 0) -> None:
        with self._lock:
            counts = self._counts.get(sha256)
            if counts is None:
                counts = self._counts[sha256] = [0, 0, 0]
            counts[0] += rows
            counts[1] += errors
            counts[2] += flagged
            self._dirty = True

    def load_failed(self, sha256: str, reason: str) -> None:
        with self._lock:
            self._load_errors[sha256] = reason
            self._dirty = True
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        """Write the counters if they changed (and ``interval`` passed, unless ``force``)."""
        now = time.monotonic()
        with self._lock:
            if not self._dirty or (not force and now - self._written < self.interval):
                return
            body = {
                "format": FORMAT,
                "pid": os.getpid(),
                "bundles": {sha: {"predictions": c[0], "errors": c[1], "flagged": c[2]} for sha, c in self._counts.items()},
                "load_errors": dict(self._load_errors),
            }
            self._dirty = False
            self._written = now
        self.dir.mkdir(mode=0o750, exist_ok=True)
        tmp = self.dir / f".{self.path.name}.tmp"
        tmp.write_bytes(json.dumps(body).encode())
        os.replace(tmp, self.path)


def read_health(store_root: str | os.PathLike[str], sha256: str) -> dict[str, Any]:
    """The counters of ``sha256`` summed over every serving process's file, and the load errors."""
    total = {"predictions": 0, "errors": 0, "flagged": 0, "load_errors": []}
    directory = Path(store_root) / HEALTH_DIR
    for path in directory.glob("*.json") if directory.is_dir() else ():
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # a file being replaced, or of a dead process: the next read sees it
        counts = raw.get("bundles", {}).get(sha256)
        if isinstance(counts, dict):
            for key in ("predictions", "errors", "flagged"):
                value = counts.get(key)
                if isinstance(value, int):
                    total[key] += value
        error = raw.get("load_errors", {}).get(sha256)
        if isinstance(error, str):
            total["load_errors"].append(error)
    return total


class WatchedModel:
    """An ``EdgeModel`` whose calls are counted into a ``HealthProbe``; everything else is the model's."""

    __slots__ = ("_model", "_probe", "_sha")

    def __init__(self, model: Any, probe: HealthProbe) -> None:
        self._model = model
        self._probe = probe
        self._sha = model.sha256

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, data: Any) -> Any:
        try:
            result = self._model.predict(data)
        except Exception:
            self._probe.observe(self._sha, rows=_rows(data), errors=_rows(data))
            raise
        if isinstance(result, dict):
            self._probe.observe(self._sha, rows=1, flagged=1 if result.get("flags") else 0)
        else:
            self._probe.observe(self._sha, rows=len(result), flagged=sum(1 for r in result if r.get("flags")))
        return result

    def predict_batch(self, columns: Any) -> Any:
        try:
            result = self._model.predict_batch(columns)
        except Exception:
            self._probe.observe(self._sha, rows=1, errors=1)
            raise
        rows = len(result["prediction"]) if "prediction" in result else 0
        self._probe.observe(self._sha, rows=rows, flagged=len(result.get("flags") or {}))
        return result


def _rows(data: Any) -> int:
    if isinstance(data, dict):
        return 1
    try:
        return max(1, len(data))
    except TypeError:
        return 1
