"""Errors of the benchmark suite. A measurement that fails records its error in the table;
these say what went wrong in the benchmark's own machinery (a child process, the collector,
a venv)."""

from __future__ import annotations


class BenchError(Exception):
    """A measurement could not be made; the message names what failed and how."""
