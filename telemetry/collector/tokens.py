"""Device tokens, stored as sha256 digests only.

The tokens file is JSON: ``{"format": "edgepack-tokens", "version": 1, "devices":
{"<device id>": {"sha256": "<hex>", "added": <unix seconds>}}}``. A token is shown once,
when it is created; losing it means rotating it. The file is rewritten atomically
(temporary file + rename) so a running collector never reads half of it, and reloaded by
the collector whenever it changes on disk, so devices can be added without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import TokenError

FORMAT = "edgepack-tokens"
VERSION = 1
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
TOKEN_PREFIX = "ept_"
logger = logging.getLogger("edgepack.collector")


def digest(token: str) -> str:
    """The sha256 (hex) under which ``token`` is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_device_id(device_id: str) -> None:
    if not DEVICE_ID.fullmatch(device_id):
        raise TokenError(
            f"device id {device_id!r} is not allowed: expected 1-128 characters of letters, digits "
            "and . _ : @ -, starting with a letter or digit"
        )


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise TokenError(
            f"tokens file {path} does not exist; create it with: edgepack token add DEVICE_ID --tokens {path}"
        ) from exc
    except OSError as exc:
        raise TokenError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise TokenError(f"tokens file {path} is not valid JSON ({exc}); expected a file written by edgepack token add") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TokenError(f"tokens file {path} is not an edgepack tokens file (expected \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise TokenError(f"tokens file {path} has version {document.get('version')!r}; this edgepack reads version {VERSION}")
    devices = document.get("devices")
    if not isinstance(devices, dict):
        raise TokenError(f"tokens file {path}: \"devices\" must be an object of device id -> entry")
    for device_id, entry in devices.items():
        stored = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(stored, str) or not re.fullmatch(r"[0-9a-f]{64}", stored):
            raise TokenError(f"tokens file {path}: device {device_id!r} has no valid \"sha256\" (expected 64 hex digits)")
    return devices


def _write(path: Path, devices: dict[str, dict[str, object]]) -> None:
    document = {"format": FORMAT, "version": VERSION, "devices": devices}
    data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two `token add` runs at once must not lose one another's device: serialise the
    # read-modify-write. The lock is on the directory, since the file itself is replaced
    # (a new inode) on every write, and a lock file would be left lying around.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_token(path: str | os.PathLike[str], device_id: str, *, rotate: bool = False) -> str:
    """Create a token for ``device_id`` in the tokens file at ``path`` and return it.

    The file is created when missing. An existing device is an error unless ``rotate``,
    which replaces its token (the old one stops working at once).
    """
    path = Path(path)
    _check_device_id(device_id)
    with _locked(path):
        devices = _read(path) if path.exists() else {}
        if device_id in devices and not rotate:
            raise TokenError(
                f"device {device_id!r} already has a token in {path}; pass --rotate to replace it "
                "(the old token stops working)"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        devices[device_id] = {"sha256": digest(token), "added": round(time.time(), 3)}
        _write(path, devices)
    return token


class TokenStore:
    """The collector's view of the tokens file: who holds which token digest.

    ``device_for`` re-reads the file when it changed on disk; if the new version cannot
    be read the previous one stays in force, so a broken edit never locks devices out.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._broken: tuple[int, int, int] | None = None
        self._digests = self._load()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, str]:
        return {device: str(entry["sha256"]) for device, entry in _read(self.path).items()}

    def _refresh(self) -> None:
        signature = self._stat()
        if signature is None or signature in (self._signature, self._broken):
            return
        with self._lock:
            if signature in (self._signature, self._broken):
                return
            try:
                self._digests = self._load()
            except TokenError as exc:
                # Remember the bad version so it is reported once, not on every request.
                self._broken = signature
                logger.warning("%s; keeping the previous tokens", exc)
                return
            self._signature = signature
            logger.info("tokens file %s reloaded: %d device(s)", self.path, len(self._digests))

    @property
    def devices(self) -> list[str]:
        """Device ids that hold a token."""
        self._refresh()
        return sorted(self._digests)

    def device_for(self, token: str) -> str | None:
        """The device id holding ``token``, or ``None``; compares digests in constant time."""
        self._refresh()
        presented = digest(token)
        found: str | None = None
        # Look at every entry whatever matches, so timing does not reveal where a match is.
        for device, stored in self._digests.items():
            if hmac.compare_digest(stored, presented):
                found = device
        return found
