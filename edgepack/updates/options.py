"""Options of the device's update loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    """The health gate after a switch: it closes after ``predictions`` rows or ``seconds``,
    whichever comes first, and fails on the rates over what was observed by then."""

    predictions: int = 20
    """N: decide once this many rows were predicted on the new bundle."""
    seconds: float = 60.0
    """M: decide at the latest this long after the switch (on what was observed; with no
    prediction at all, the golden self-test alone decides)."""
    max_error_rate: float = 0.05
    """Fail when the fraction of rows that raised (InputError, PredictionError...) exceeds
    the previous bundle's fraction (as the same apps saw it) by more than this."""
    max_flag_rate: float | None = None
    """Fail when the fraction of rows with guardrail flags exceeds the previous bundle's by
    more than this (None: not checked)."""


@dataclass(frozen=True, kw_only=True)
class UpdateOptions:
    """Where the device polls, what it trusts, and how it decides."""

    store: Path
    """The model store the update loop installs into (and ``serve --store`` follows)."""
    endpoint: str
    """The home service URL, e.g. ``http://home:8787``."""
    token: str
    """The device token (reads releases, reports status)."""
    device_id: str
    """This device's id, as in its token: the staged-rollout bucket is computed from it."""
    trusted_root: Path
    """``1.root.json`` of the release repository, provisioned on the device: TUF's trust anchor."""
    channel: str = "stable"
    """The channel followed."""
    public_key: Path | None = None
    """The bundle signing key (``edgepack keygen``); None only with ``allow_unsigned``."""
    allow_unsigned: bool = False
    """Install bundles without a signature check (the TUF checks still apply)."""
    interval: float = 10.0
    """Seconds between polls."""
    full_refresh_seconds: float = 3600.0
    """A full TUF refresh (root N+1, timestamp, ...) at least this often, even when the
    conditional timestamp poll says nothing changed: it bounds how late a root rotation
    or a server that keeps answering 304 (a freeze) is noticed."""
    gate: GateOptions = field(default_factory=GateOptions)
    """The health gate."""
    timeout: float = 30.0
    """HTTP timeout per request, seconds."""
