"""How much work each benchmark mode does."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """Repetition counts and sizes for one run of the suite."""

    mode: str
    """Name of the preset (``quick``, ``full``, ``smoke``), recorded in the results file."""
    train_rows: int
    """Rows the benchmark trains each model on."""
    latency_rounds: int
    """Round-robin rounds for single-row latency; every path runs once per round."""
    latency_calls: int
    """Timed single-row calls per path per round (each call timed on its own)."""
    latency_warmup: int
    """Untimed single-row calls per path before the first round."""
    latency_budget: float
    """Seconds after which a path's block ends early within a round (slow paths get fewer samples)."""
    batch_rows: int
    """Rows per call for batch throughput."""
    batch_rounds: int
    """Round-robin rounds for batch throughput (one timed call per path per round)."""
    cold_runs: int
    """Fresh processes per path for cold start."""
    cold_models: tuple[str, ...]
    """Models (by case name) measured for cold start and memory."""
    memory_runs: int
    """Fresh processes per path for peak RSS (it varies little between runs)."""
    memory_predictions: int
    """Predictions made by the child process whose peak RSS is measured."""
    record_count: int
    """Records per round for the telemetry ``record()`` rate."""
    record_rounds: int
    """Round-robin rounds for the telemetry ``record()`` rate."""
    overhead_block: int
    """Predictions per timed block for the all-in telemetry cost. The block ends with
    flush(), whose wait for the last commit is a fixed cost per block that the figure
    charges per prediction: the longer the block, the nearer the figure is to what a
    device recording continuously pays (about 2 ms per flush: 1 µs per prediction at
    2,000, 0.2 µs at 10,000)."""
    overhead_rounds: int
    """Round-robin rounds of those blocks."""
    sync_records: int
    """Records pushed through the sync service to the collector per round."""
    sync_rounds: int
    """Rounds of the end-to-end sync measurement."""
    footprint: str
    """``"all"``: device and build venvs; ``"device"``: device venv only; ``"skip"``: neither."""
    monitor_records: int = 1_000_000
    """Records stored at home for the drift report (the issue's target is over 1,000,000)."""
    monitor_rounds: int = 3
    """Timed drift reports over those records."""

    def with_footprint(self, footprint: str) -> BenchOptions:
        return replace(self, footprint=footprint)


QUICK = BenchOptions(
    mode="quick",
    train_rows=2_000,
    latency_rounds=10,
    latency_calls=30,
    latency_warmup=50,
    latency_budget=0.1,
    batch_rows=10_000,
    batch_rounds=3,
    cold_runs=3,
    cold_models=("forest",),
    memory_runs=1,
    memory_predictions=10_000,
    record_count=20_000,
    record_rounds=3,
    overhead_block=1_000,
    overhead_rounds=10,
    sync_records=5_000,
    sync_rounds=1,
    footprint="skip",
    monitor_records=50_000,
    monitor_rounds=3,
)

FULL = BenchOptions(
    mode="full",
    train_rows=5_000,
    latency_rounds=50,
    latency_calls=40,
    latency_warmup=200,
    latency_budget=0.25,
    batch_rows=10_000,
    batch_rounds=15,
    cold_runs=5,
    cold_models=("logreg", "forest", "hgb"),
    memory_runs=2,
    memory_predictions=10_000,
    record_count=100_000,
    record_rounds=5,
    overhead_block=10_000,
    overhead_rounds=16,
    sync_records=50_000,
    sync_rounds=2,
    footprint="all",
)

# Only for a structural check of the suite: numbers from it mean nothing.
SMOKE = BenchOptions(
    mode="smoke",
    train_rows=500,
    latency_rounds=3,
    latency_calls=5,
    latency_warmup=5,
    latency_budget=0.02,
    batch_rows=1_000,
    batch_rounds=2,
    cold_runs=1,
    cold_models=("forest",),
    memory_runs=1,
    memory_predictions=1_000,
    record_count=2_000,
    record_rounds=2,
    overhead_block=200,
    overhead_rounds=3,
    sync_records=2_000,
    sync_rounds=1,
    footprint="skip",
    monitor_records=3_000,
    monitor_rounds=1,
)

PRESETS = {preset.mode: preset for preset in (QUICK, FULL, SMOKE)}
