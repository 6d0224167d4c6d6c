"""Device and admin tokens, stored as sha256 digests only.

The tokens file is JSON: ``{"format": "edgepack-tokens", "version": 1, "devices":
{"<device id>": {"sha256": "<hex>", "added": <unix seconds>}}, "admins": {"<name>": {...}}}``.
Two roles: a device token uploads and reads its own device's records; an admin token
reads the whole fleet and uploads nothing. Admins live under their own key, so a
collector from before roles (which reads only ``devices``) never takes one for a device.
A name is unique across both roles, so ``token revoke NAME`` is never ambiguous.

A token is shown once, when it is created; losing it means rotating it. The file is
rewritten atomically (temporary file + rename, owner-only) so a running collector never
reads half of it, and the collector reloads it whenever its inode, mtime or size change
(one ``stat`` per request), so adding, rotating and revoking need no restart.
"""

from __future__ import annotations

import fcntl
import hashlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import TokenError

FORMAT = "edgepack-tokens"
VERSION = 1
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
TOKEN_PREFIX = "ept_"
ADMIN_TOKEN_PREFIX = "epa_"
DEVICE = "device"
ADMIN = "admin"
Role = Literal["device", "admin"]
_SECTIONS: dict[str, Role] = {"devices": DEVICE, "admins": ADMIN}


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who holds a token."""

    name: str
    """The device id (device role) or the admin's name."""

    role: Role
    """``device``: writes and reads its own records; ``admin``: reads the fleet, writes nothing."""


@dataclass(frozen=True, kw_only=True)
class TokenEntry:
    """One line of ``edgepack token list``: never the token itself, which is not stored."""

    name: str
    """Device id or admin name."""

    role: Role
    """``device`` or ``admin``."""

    added: float | None
    """When the token was created or last rotated, unix seconds (None if the file does not say)."""

    sha256_prefix: str
    """The first 12 hex digits of the token's sha256, to match a token to its entry."""
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


def _read(path: Path) -> dict[str, dict[str, dict[str, object]]]:
    """The sections of the tokens file: ``{"devices": {...}, "admins": {...}}``."""
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
    sections: dict[str, dict[str, dict[str, object]]] = {}
    for section in _SECTIONS:
        entries = document.get(section, {})
        if not isinstance(entries, dict):
            raise TokenError(f"tokens file {path}: \"{section}\" must be an object of name -> entry")
        for name, entry in entries.items():
            stored = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(stored, str) or not re.fullmatch(r"[0-9a-f]{64}", stored):
                raise TokenError(f"tokens file {path}: {section[:-1]} {name!r} has no valid \"sha256\" (expected 64 hex digits)")
        sections[section] = entries
    return sections


def _empty() -> dict[str, dict[str, dict[str, object]]]:
    return {section: {} for section in _SECTIONS}


def _write(path: Path, sections: dict[str, dict[str, dict[str, object]]]) -> None:
    document: dict[str, object] = {"format": FORMAT, "version": VERSION, "devices": sections["devices"]}
    if sections["admins"]:
        document["admins"] = sections["admins"]
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


def add_token(path: str | os.PathLike[str], name: str, *, rotate: bool = False, admin: bool = False) -> str:
    """Create a token for device ``name`` (or admin ``name``) in the tokens file at ``path`` and return it.

    The file is created when missing. An existing name is an error unless ``rotate``,
    which replaces its token (the old one stops working at once); a rotation keeps the role.
    """
    path = Path(path)
    _check_device_id(name)
    section = "admins" if admin else "devices"
    with _locked(path):
        sections = _read(path) if path.exists() else _empty()
        other = "devices" if admin else "admins"
        if name in sections[other]:
            raise TokenError(
                f"{name!r} already holds {'a device' if other == 'devices' else 'an admin'} token in {path}; "
                "names are unique across devices and admins: pick another name, or revoke that token first"
            )
        if name in sections[section] and not rotate:
            raise TokenError(
                f"{'admin' if admin else 'device'} {name!r} already has a token in {path}; pass --rotate to replace it "
                "(the old token stops working)"
            )
        token = (ADMIN_TOKEN_PREFIX if admin else TOKEN_PREFIX) + secrets.token_urlsafe(32)
        sections[section][name] = {"sha256": digest(token), "added": round(time.time(), 3)}
        _write(path, sections)
    return token


def list_tokens(path: str | os.PathLike[str]) -> list[TokenEntry]:
    """Every device and admin in the tokens file, devices first, each sorted by name."""
    sections = _read(Path(path))
    entries = []
    for section, role in _SECTIONS.items():
        for name, entry in sorted(sections[section].items()):
            added = entry.get("added")
            entries.append(
                TokenEntry(
                    name=name,
                    role=role,
                    added=float(added) if isinstance(added, (int, float)) and not isinstance(added, bool) else None,
                    sha256_prefix=str(entry["sha256"])[:12],
                )
            )
    return entries


def revoke_token(path: str | os.PathLike[str], name: str) -> Role:
    """Remove the token of device or admin ``name``; a running collector refuses it (401) from its next request on.

    Returns the role the token had. Records already stored for a device are kept.
    """
    path = Path(path)
    with _locked(path):
        sections = _read(path)
        for section, role in _SECTIONS.items():
            if name in sections[section]:
                del sections[section][name]
                _write(path, sections)
                return role
    known = ", ".join(entry.name for entry in list_tokens(path)) or "none"
    raise TokenError(f"no device or admin {name!r} in {path}; known: {known}")


class TokenStore:
    """The collector's view of the tokens file: who holds which token digest.

    Every lookup first compares the file's (inode, mtime, size) with those of the version
    in memory, and re-reads it when they differ: the writer replaces the file, so a change
    always shows as a new inode. If the new version cannot be read the previous one stays
    in force, so a broken edit never locks devices out.
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

    def _load(self) -> dict[str, Identity]:
        """Digest -> identity: a lookup is one dict access, whatever the number of tokens."""
        sections = _read(self.path)
        return {
            str(entry["sha256"]): Identity(name=name, role=role)
            for section, role in _SECTIONS.items()
            for name, entry in sections[section].items()
        }

    def _refresh(self) -> None:
        signature = self._stat()
        # A file that is briefly missing (moved aside by hand) keeps the tokens in force;
        # revoking is done with `edgepack token revoke`, which rewrites the file.
        if signature is None:
            return
        if signature in (self._signature, self._broken):
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
            logger.info("tokens file %s reloaded: %d token(s)", self.path, len(self._digests))

    @property
    def devices(self) -> list[str]:
        """Device ids that hold a token."""
        self._refresh()
        return sorted(identity.name for identity in self._digests.values() if identity.role == DEVICE)

    def identity_for(self, token: str) -> Identity | None:
        """Who holds ``token``, or ``None``.

        The token is hashed before the lookup, so the dict probe only ever compares sha256
        digests of what was presented: timing reveals nothing about any stored token.
        """
        self._refresh()
        return self._digests.get(digest(token))

    def device_for(self, token: str) -> str | None:
        """The device id holding ``token``, or ``None`` (also for an admin token)."""
        identity = self.identity_for(token)
        return identity.name if identity is not None and identity.role == DEVICE else None
