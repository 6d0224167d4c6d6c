"""`edgepack quickstart`: the whole path, registry to device to collector, on embedded defaults."""

from .run import QuickstartReport, run_quickstart

__all__ = ["QuickstartReport", "run_quickstart"]
