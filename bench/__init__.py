"""Side-by-side benchmarks of edgepack against the paths users have today (``python -m bench``)."""

from .errors import BenchError
from .figures import Figure, Report, Target
from .options import FULL, QUICK, SMOKE, BenchOptions
from .suite import run_suite

__all__ = ["FULL", "QUICK", "SMOKE", "BenchError", "BenchOptions", "Figure", "Report", "Target", "run_suite"]
