"""``ModelStore``: the device's directory of verified bundles and the pointer to the current one.

Layout (``STORE`` is the directory given to ``edgepack install --store`` and ``serve --store``)::

    STORE/
      current.json                 the pointer: current and previous bundle, highest version seen
      bundles/<sha256>.edgepkg     verified bundles, immutable once renamed in
      .staging/                    half-written files; never referenced by the pointer
      .lock                        taken by an installer, so two installs never interleave

A bundle is verified (hashes, signature, self-test) before anything is written. Its
bytes are written and fsynced under ``.staging/``, renamed into ``bundles/`` and the
directory fsynced; only then is a new pointer written, fsynced and renamed over
``current.json`` (and the directory fsynced). A SIGKILL or a power cut at any moment
therefore leaves the pointer naming the old bundle or the new one, each complete on disk.
Readers (``serve --store``, ``StoreFollower``) load through ``runtime.load`` again, so
even a file damaged after the fact is refused rather than served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import signing
from .bundle import BundleLimits
from .errors import BundleError, DowngradeError, StoreError
from .highwater import version_number

STORE_FORMAT = 1
POINTER = "current.json"
BUNDLES = "bundles"
STAGING = ".staging"
LOCK = ".lock"

PAUSE_ENV = "EDGEPACK_STORE_PAUSE_AT"
"""Crash tests set it to a step name: the installer announces the step on stderr and
sleeps there, so the test can SIGKILL it at exactly that point."""
PAUSE_POINTS = ("verified", "staged", "stored", "pointer_staged", "switched")

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class StoreEntry:
    """One bundle the pointer names."""

    sha256: str
    """sha256 of the ``.edgepkg`` file (also its file name under ``bundles/``)."""
    name: str
    """The model's registry name."""
    version: str
    """The model's registry version."""
    installed_at: str
    """UTC time of the install, ISO 8601 (informational)."""


@dataclass(frozen=True, kw_only=True)
class StoreState:
    """What ``current.json`` says."""

    current: StoreEntry | None = None
    """The bundle to serve; None in a store nothing was installed into yet."""
    previous: StoreEntry | None = None
    """The bundle served before it (what ``rollback`` returns to)."""
    generation: int = 0
    """Grows by one with every change of the pointer."""
    highest: dict[str, str] = field(default_factory=dict)
    """Highest version installed so far, per model name (downgrade protection)."""


@dataclass(frozen=True, kw_only=True)
class InstallReport:
    entry: StoreEntry
    """The bundle now current."""
    previous: StoreEntry | None
    """The bundle current before (None for a first install)."""
    changed: bool
    """False when the bundle was already current (nothing was written)."""
    signature_verified: bool
    """Whether the signature was checked against a public key."""


def is_older(name: str, candidate: str, than: str) -> bool:
    """Whether registry version ``candidate`` of ``name`` is older than ``than`` (same rule as
    ``runtime.highwater``: versions are the registry's integers, compared as integers)."""
    return version_number(name, candidate) < version_number(name, than)


def pause_at(step: str) -> None:
    """Stop here for good when ``PAUSE_ENV`` names ``step`` (crash tests SIGKILL the process)."""
    if os.environ.get(PAUSE_ENV) == step:
        sys.stderr.write(f"edgepack-store: paused at {step}\n")
        sys.stderr.flush()
        while True:  # until the test's SIGKILL
            time.sleep(60)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or a new entry in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to a fresh file and fsync it (the caller renames it into place)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _entry(raw: Any, what: str) -> StoreEntry | None:
    if raw is None:
        return None
    try:
        entry = StoreEntry(**raw)
    except TypeError as exc:
        raise StoreError(f"{POINTER}: '{what}' is not a bundle entry ({exc})") from exc
    if not isinstance(entry.sha256, str) or not _SHA256.fullmatch(entry.sha256):
        raise StoreError(f"{POINTER}: '{what}' has no valid sha256")
    return entry


class ModelStore:
    """A directory of verified bundles with an atomically replaced pointer to the current one."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the model store {str(self.root)!r}: {exc.strerror or exc}") from exc
        elif not self.root.is_dir():
            raise StoreError(f"model store {str(self.root)!r} does not exist; install a bundle into it first")

    def __repr__(self) -> str:
        return f"<ModelStore {self.root}>"

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def path_of(self, entry: StoreEntry) -> Path:
        return self.root / BUNDLES / f"{entry.sha256}.edgepkg"

    # -- reading ------------------------------------------------------------------------

    def stamp(self) -> tuple[int, int, int] | None:
        """(inode, mtime_ns, size) of the pointer: a new value means a new pointer. One stat call."""
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def state(self) -> StoreState:
        """The pointer as it is now (an empty state when nothing was installed yet)."""
        try:
            text = self.pointer.read_bytes()
        except FileNotFoundError:
            return StoreState()
        except OSError as exc:
            raise StoreError(f"cannot read {self.pointer}: {exc.strerror or exc}") from exc
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{self.pointer} is not valid JSON ({exc}); it was not written by edgepack") from exc
        if not isinstance(raw, dict) or raw.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.pointer}: unknown store format {raw.get('format') if isinstance(raw, dict) else raw!r}")
        highest = raw.get("highest", {})
        if not isinstance(highest, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in highest.items()):
            raise StoreError(f"{self.pointer}: 'highest' must map model names to versions")
        return StoreState(
            current=_entry(raw.get("current"), "current"),
            previous=_entry(raw.get("previous"), "previous"),
            generation=int(raw.get("generation", 0)),
            highest=dict(highest),
        )

    def current_path(self) -> Path | None:
        current = self.state().current
        return None if current is None else self.path_of(current)

    # -- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_pointer(self, state: StoreState) -> None:
        body = {
            "format": STORE_FORMAT,
            "generation": state.generation,
            "current": None if state.current is None else asdict(state.current),
            "previous": None if state.previous is None else asdict(state.previous),
            "highest": state.highest,
        }
        part = self.root / STAGING / f"{POINTER}.{os.getpid()}.part"
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        write_durably(part, json.dumps(body, indent=2, sort_keys=True).encode() + b"\n")
        pause_at("pointer_staged")
        os.replace(part, self.pointer)
        pause_at("switched")
        fsync_dir(self.root)

    def install(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        public_key: signing.KeySource | None = None,
        require_signature: bool = False,
        allow_downgrade: bool = False,
        limits: BundleLimits = BundleLimits(),
    ) -> InstallReport:
        """Verify ``source`` fully (hashes, signature, self-test), store it, make it current.

        Raises the runtime's ``BundleError`` family for a bundle that fails verification
        (nothing is written then), ``DowngradeError`` for a version older than the highest
        this store has installed of that model (unless ``allow_downgrade``), ``StoreError``
        when the store cannot be written.
        """
        from .model import load  # onnxruntime only when an install really happens

        if isinstance(source, bytes):
            payload = source
        else:
            try:
                size = os.stat(source).st_size
                if size > limits.max_bundle_bytes:
                    raise BundleError(f"bundle is {size} bytes, over the limit of {limits.max_bundle_bytes}")
                payload = Path(source).read_bytes()
            except OSError as exc:
                raise BundleError(f"cannot read bundle {str(source)!r}: {exc.strerror or exc}") from exc
        model = load(payload, public_key=public_key, require_signature=require_signature, limits=limits)
        pause_at("verified")
        with self._locked():
            state = self.state()
            current = state.current
            if current is not None and current.sha256 == model.sha256:
                return InstallReport(entry=current, previous=state.previous, changed=False, signature_verified=model.signature_verified)
            seen = state.highest.get(model.name)
            if seen is not None and is_older(model.name, model.version, seen) and not allow_downgrade:
                raise DowngradeError(
                    f"{model.name} version {model.version} is older than version {seen}, which this store has already "
                    "installed; a device never goes back to an older model unless told to (--allow-downgrade)"
                )
            target = self.root / BUNDLES / f"{model.sha256}.edgepkg"
            try:
                for part_dir in (self.root / BUNDLES, self.root / STAGING):
                    part_dir.mkdir(mode=0o750, exist_ok=True)
                if not target.exists():
                    part = self.root / STAGING / f"{model.sha256}.{os.getpid()}.part"
                    with contextlib.suppress(FileNotFoundError):
                        part.unlink()
                    write_durably(part, payload)
                    pause_at("staged")
                    os.replace(part, target)
                    fsync_dir(target.parent)
                pause_at("stored")
                entry = StoreEntry(
                    sha256=model.sha256,
                    name=model.name,
                    version=model.version,
                    installed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                )
                highest = dict(state.highest)
                if seen is None or is_older(model.name, seen, model.version):
                    highest[model.name] = model.version
                self._write_pointer(
                    StoreState(current=entry, previous=current, generation=state.generation + 1, highest=highest)
                )
                self._collect({entry.sha256} | ({current.sha256} if current else set()))
            except OSError as exc:
                raise StoreError(f"cannot write to the model store {self.root}: {exc.strerror or exc}") from exc
        return InstallReport(entry=entry, previous=current, changed=True, signature_verified=model.signature_verified)

    def rollback(self) -> StoreState:
        """Make the previous bundle current again (it stays in ``previous`` no longer)."""
        with self._locked():
            state = self.state()
            if state.previous is None:
                raise StoreError(f"nothing to roll back to: the store {self.root} keeps no previous bundle")
            if not self.path_of(state.previous).is_file():
                raise StoreError(f"the previous bundle {state.previous.sha256[:12]} is missing from {self.root / BUNDLES}")
            new = StoreState(current=state.previous, previous=None, generation=state.generation + 1, highest=state.highest)
            try:
                self._write_pointer(new)
                self._collect({state.previous.sha256})
            except OSError as exc:
                raise StoreError(f"cannot write to the model store {self.root}: {exc.strerror or exc}") from exc
            return new

    def _collect(self, keep: set[str]) -> None:
        """Delete bundles the pointer no longer names and staging files of dead installs."""
        for path in (self.root / BUNDLES).glob("*.edgepkg"):
            if path.stem not in keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        staging = self.root / STAGING
        for path in staging.iterdir() if staging.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
