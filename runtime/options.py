"""How the runtime sets up onnxruntime on a small device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Optimization = Literal["disable", "basic", "extended", "all"]


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """onnxruntime session settings chosen for small, shared, battery-powered CPUs.

    The defaults keep one model from taking over the device: one compute thread that
    sleeps instead of spinning, and no memory arena or memory pattern, which would keep
    the largest batch's buffers allocated forever when batch sizes vary.
    """

    intra_op_threads: int = 1
    """Threads used inside one operator. onnxruntime's own default follows the host's
    core count and spins; on a device that also runs the application, 1 is the safe choice."""
    inter_op_threads: int = 1
    """Threads used to run independent operators in parallel (only with ``parallel=True``)."""
    allow_spinning: bool = False
    """Let idle worker threads busy-wait for work (``session.intra_op.allow_spinning``).
    Spinning saves microseconds per call at the price of a core at 100%."""
    memory_arena: bool = False
    """Keep onnxruntime's CPU memory arena, which never returns memory to the system."""
    memory_pattern: bool = False
    """Pre-plan memory from the first input shape; only pays off when batch size never changes."""
    parallel: bool = False
    """Run independent operators in parallel (``ExecutionMode.ORT_PARALLEL``)."""
    optimization: Optimization = "all"
    """Graph optimization level applied when the session is created."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    """Execution providers, in order of preference."""

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SessionOptions.{name} must be an int >= 1, got {value!r}")
        if self.optimization not in ("disable", "basic", "extended", "all"):
            raise ValueError(
                f"SessionOptions.optimization must be 'disable', 'basic', 'extended' or 'all', got {self.optimization!r}"
            )
        if not self.providers:
            raise ValueError("SessionOptions.providers must name at least one execution provider")
