"""The update loop's own durable state: ``STORE/.updates/state.json``.

- ``floors``: per channel, the highest release number this device acted on. A release
  numbered below it is refused (a replayed older release), whatever TUF says.
- ``rejected``: releases whose install or health gate failed here, with the reason; they
  are never retried (a fixed bundle comes as a new release).
- ``gate``: the health gate of the last switch, written before the switch so that a crash
  at any point is resumed (or abandoned, if the switch never happened) on restart.
- ``outbox``: reports not yet delivered home; sent first on every poll.

Written like the store's pointer: temporary file, fsync, rename, fsync the directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

FORMAT = 1
MAX_OUTBOX = 200


@dataclass(kw_only=True)
class UpdateState:
    floors: dict[str, int] = field(default_factory=dict)
    """Highest release number acted on, per channel."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Release number (as a string) -> why it was refused or rolled back here."""
    gate: dict[str, Any] | None = None
    """The open health gate: release, channel, sha256, started_at, baseline, selftest."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Reports waiting to be delivered."""


def load_state(path: Path) -> UpdateState:
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return UpdateState()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the update state {path} cannot be read ({exc}); it holds the release floor (downgrade protection): "
            "fix it, or delete it only if you accept that the device may take an older release again"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"the update state {path} has an unknown format")
    return UpdateState(
        floors={str(k): int(v) for k, v in raw.get("floors", {}).items()},
        rejected={str(k): str(v) for k, v in raw.get("rejected", {}).items()},
        gate=raw.get("gate"),
        outbox=list(raw.get("outbox", []))[-MAX_OUTBOX:],
    )


def save_state(path: Path, state: UpdateState) -> None:
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    body = json.dumps({"format": FORMAT, **asdict(state)}, sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
