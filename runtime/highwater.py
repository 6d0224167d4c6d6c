"""The version floor: refuse a validly signed but older bundle (a downgrade) once a newer one ran.

A signature proves who built a bundle, not that it is the one to run now: an attacker who
kept last month's signed bundle (with last month's bug) can hand it to a device again.
``HighWater`` remembers, per model name, the highest registry version a device accepted,
and refuses anything older unless the caller explicitly goes back (``ModelSlot.rollback``
or ``allow_downgrade=True``).

"Older" means: the same registered model name, and a smaller MLflow registry version
number (versions are the decimal integers the registry assigns, compared as integers, so
10 is newer than 9). Bundles of different model names are never compared. An explicit
downgrade moves the floor down to the version chosen, so the device can restart on it;
any later upgrade raises it again.

The floor lives in memory and, given a ``path``, in a small JSON state file replaced
atomically (write a temporary file, fsync it, rename it over the old one, fsync the
directory), so it survives restarts and power loss. A state file that cannot be read is an
error, never a reset: a floor that silently drops to zero would undo the protection. The
model store (rollout) uses the same object.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .errors import DowngradeError, StateFileError

STATE_FORMAT = 1


def version_number(name: str, version: object) -> int:
    """The registry version of a bundle as an integer; ``DowngradeError`` if it is not one."""
    text = str(version)
    if not text.isascii() or not text.isdigit():
        raise DowngradeError(
            f"model {name!r} has version {version!r}; expected a registry version number (1, 2, ...) "
            "to compare with the version already running"
        )
    return int(text)


class HighWater:
    """Per model name, the lowest version a device may still load (the "floor")."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._floors: dict[str, int] = self._read() if self.path is not None else {}

    def floor(self, name: str) -> int | None:
        """The floor for ``name``, or None when no version of it was ever accepted."""
        with self._lock:
            return self._floors.get(name)

    def check(self, name: str, version: object, *, allow_downgrade: bool = False) -> int:
        """Raise ``DowngradeError`` if ``version`` of ``name`` is older than its floor.

        Returns the version as an integer. Does not change the floor: call ``accept`` once
        the bundle is actually serving.
        """
        number = version_number(name, version)
        floor = self.floor(name)
        if floor is not None and number < floor and not allow_downgrade:
            raise DowngradeError(
                f"model {name!r} version {number} is older than version {floor}, which this device already ran; "
                "refusing a downgrade (an old signed bundle replayed). To go back on purpose, use "
                "ModelSlot.rollback() or pass allow_downgrade=True",
                name=name,
                version=number,
                floor=floor,
            )
        return number

    def accept(self, name: str, version: object, *, downgrade: bool = False) -> None:
        """Record that ``version`` of ``name`` now serves: raise the floor to it, or (with
        ``downgrade=True``, an explicit step back) set the floor to it."""
        number = version_number(name, version)
        with self._lock:
            current = self._floors.get(name)
            if current is not None and (number == current or (number < current and not downgrade)):
                return
            floors = {**self._floors, name: number}
            if self.path is not None:
                self._write(floors)
            self._floors = floors

    # -- the state file -------------------------------------------------------------------

    def _read(self) -> dict[str, int]:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateFileError(f"cannot read the version state file {str(self.path)!r}: {exc.strerror or exc}") from exc
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise StateFileError(self._damaged(f"not valid JSON ({exc})")) from exc
        floors = raw.get("floors") if isinstance(raw, dict) and raw.get("format") == STATE_FORMAT else None
        if not isinstance(floors, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in floors.items()
        ):
            raise StateFileError(self._damaged(f'expected {{"format": {STATE_FORMAT}, "floors": {{model name: version}}}}'))
        return dict(floors)

    def _damaged(self, why: str) -> str:
        return (
            f"version state file {str(self.path)!r} is damaged: {why}. It holds the highest model version this device "
            "ran (downgrade protection); fix it, or delete it only if you accept that any older signed bundle may load"
        )

    def _write(self, floors: dict[str, int]) -> None:
        assert self.path is not None
        payload = json.dumps({"format": STATE_FORMAT, "floors": floors}, sort_keys=True).encode()
        directory = self.path.parent
        tmp = directory / f".{self.path.name}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            # The rename itself is durable only once the directory entry is on disk.
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateFileError(
                f"cannot write the version state file {str(self.path)!r}: {exc.strerror or exc}"
            ) from exc
