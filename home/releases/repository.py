"""``ReleaseRepository``: a TUF repository (root, targets, snapshot, timestamp) of model releases.

Layout (``RELEASES`` is ``edgepack release --releases DIR``, and what the collector serves)::

    RELEASES/
      keys/<role>.pem              Ed25519 private keys, owner-only (root.pem: keep it offline)
      metadata/N.root.json         every root version (devices walk N+1, N+2, ... to rotate keys)
      metadata/N.targets.json      consistent snapshots: each version under its own name
      metadata/N.snapshot.json
      metadata/timestamp.json      the only file replaced in place (atomically, last)
      bundles/<sha256>.edgepkg     the bundles, content-addressed
      releases.json                the release history (operator's index; devices never read it)
      .lock                        taken by every command that writes

A release is one TUF target per channel, ``channels/<channel>.edgepkg``, whose length
and sha256 are the bundle's, and whose ``custom.edgepack`` holds the release's number,
model, version, rollout percentage, device list and halted flag. Everything a device acts
on is therefore signed by the targets key and covered by TUF's version, expiry and
mix-and-match checks. With consistent snapshots a target is fetched as
``channels/<sha256>.<channel>.edgepkg``; the collector maps that name to
``bundles/<sha256>.edgepkg``, so one stored copy serves every channel.

Files are written to a temporary name, fsynced and renamed in the order bundle, targets,
snapshot, timestamp: a device polling mid-publish sees the old repository or the new one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from . import keys
from .errors import PublishError, ReleaseError
from .release import CUSTOM_KEY, RELEASE_FORMAT, ExpiryPolicy, Release, check_channel, expiry_in, now_utc, target_path, write_atomically

class ReleaseRepository:
    """The TUF repository of model releases in one directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, expiry: ExpiryPolicy = ExpiryPolicy()) -> None:
        self.root = Path(root)
        self.expiry = expiry
        if not (self.metadata_dir / "1.root.json").is_file():
            raise ReleaseError(
                f"{self.root} is not a release repository (no metadata/1.root.json); create it with: "
                f"edgepack release init --releases {self.root}"
            )

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    # -- creating ---------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike[str], *, expiry: ExpiryPolicy = ExpiryPolicy()) -> ReleaseRepository:
        """A new repository: four fresh keys, root v1, empty targets, snapshot, timestamp."""
        path = Path(root)
        if (path / "metadata" / "1.root.json").exists():
            raise ReleaseError(f"{path} already holds a release repository; it is never re-created over (devices trust its root)")
        for sub in ("metadata", "bundles"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        signers = {role: keys.generate(path / "keys", role) for role in keys.ROLES}
        root_md = Metadata(Root(expires=expiry_in(expiry.root_days), consistent_snapshot=True))
        for role, signer in signers.items():
            root_md.signed.add_key(signer.public_key, role)
        root_md.sign(signers["root"])
        write_atomically(path / "metadata" / "1.root.json", root_md.to_bytes())
        repo = cls(path, expiry=expiry)
        with repo._locked():
            targets = Metadata(Targets(expires=expiry_in(expiry.targets_days)))
            repo._commit(targets, signers)
        return repo

    # -- reading ----------------------------------------------------------------------

    def _load(self, name: str) -> Metadata[Any]:
        try:
            return Metadata.from_bytes((self.metadata_dir / name).read_bytes())
        except FileNotFoundError:
            raise ReleaseError(f"{self.metadata_dir / name} is missing; the repository is incomplete") from None

    def root_version(self) -> int:
        versions = [int(p.name.split(".")[0]) for p in self.metadata_dir.glob("*.root.json") if p.name.split(".")[0].isdigit()]
        return max(versions)

    def root_metadata(self) -> Metadata[Root]:
        return self._load(f"{self.root_version()}.root.json")

    def trusted_root_bytes(self) -> bytes:
        """``1.root.json``: what a device is provisioned with (later roots it verifies itself)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    def _current(self) -> tuple[Metadata[Timestamp], Metadata[Snapshot], Metadata[Targets]]:
        timestamp: Metadata[Timestamp] = self._load("timestamp.json")
        snapshot: Metadata[Snapshot] = self._load(f"{timestamp.signed.snapshot_meta.version}.snapshot.json")
        targets: Metadata[Targets] = self._load(f"{snapshot.signed.meta['targets.json'].version}.targets.json")
        return timestamp, snapshot, targets

    def channels(self) -> dict[str, Release]:
        """The release each channel offers now, by channel."""
        _, _, targets = self._current()
        out = {}
        for path, info in targets.signed.targets.items():
            if path.startswith("channels/") and isinstance(info.custom, dict) and CUSTOM_KEY in info.custom:
                release = Release.from_custom(info.custom)
                out[release.channel] = release
        return out

    def history(self) -> list[Release]:
        """Every release ever made, oldest first (from ``releases.json``)."""
        path = self.root / "releases.json"
        if not path.exists():
            return []
        raw = json.loads(path.read_bytes())
        return [Release.from_custom({CUSTOM_KEY: item}) for item in raw["releases"]]

    def versions(self) -> dict[str, int]:
        timestamp, snapshot, targets = self._current()
        return {"root": self.root_version(), "targets": targets.signed.version, "snapshot": snapshot.signed.version,
                "timestamp": timestamp.signed.version}

    # -- writing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _signers(self, *roles: str) -> dict[str, Any]:
        return {role: keys.load(self.keys_dir, role) for role in roles}

    def _commit(self, targets: Metadata[Targets], signers: dict[str, Any], *, bump_targets: bool = True) -> None:
        """Sign and write targets (new version), then snapshot, then timestamp."""
        meta_dir = self.metadata_dir
        try:
            old_ts, old_snap, _ = self._current()
            snap_version, ts_version = old_snap.signed.version + 1, old_ts.signed.version + 1
        except ReleaseError:
            snap_version = ts_version = 1
        if bump_targets and (meta_dir / f"{targets.signed.version}.targets.json").exists():
            targets.signed.version += 1
        targets.signed.expires = expiry_in(self.expiry.targets_days)
        targets.sign(signers["targets"])
        targets_bytes = targets.to_bytes()
        write_atomically(meta_dir / f"{targets.signed.version}.targets.json", targets_bytes)
        snapshot = Metadata(Snapshot(version=snap_version, expires=expiry_in(self.expiry.snapshot_days)))
        snapshot.signed.meta["targets.json"] = MetaFile(
            version=targets.signed.version, length=len(targets_bytes), hashes={"sha256": hashlib.sha256(targets_bytes).hexdigest()}
        )
        snapshot.sign(signers["snapshot"])
        snapshot_bytes = snapshot.to_bytes()
        write_atomically(meta_dir / f"{snap_version}.snapshot.json", snapshot_bytes)
        self._write_timestamp(ts_version, snap_version, snapshot_bytes, signers["timestamp"])

    def _write_timestamp(self, version: int, snap_version: int, snapshot_bytes: bytes, signer: Any) -> None:
        timestamp = Metadata(Timestamp(version=version, expires=expiry_in(self.expiry.timestamp_days)))
        timestamp.signed.snapshot_meta = MetaFile(
            version=snap_version, length=len(snapshot_bytes), hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()}
        )
        timestamp.sign(signer)
        write_atomically(self.metadata_dir / "timestamp.json", timestamp.to_bytes())

    def _next_release(self) -> int:
        return max((r.release for r in self.history()), default=0) + 1

    def _record(self, release: Release) -> None:
        items = [r.custom()[CUSTOM_KEY] for r in [*self.history(), release]]
        write_atomically(self.root / "releases.json", json.dumps({"format": RELEASE_FORMAT, "releases": items}, indent=1).encode())

    def _set_channel(self, release: Release, *, record: bool) -> Release:
        signers = self._signers("targets", "snapshot", "timestamp")
        _, _, targets = self._current()
        bundle = self.bundles_dir / f"{release.bundle_sha256}.edgepkg"
        if not bundle.is_file():
            raise PublishError(f"bundle {release.bundle_sha256[:12]} of release {release.release} is missing from {self.bundles_dir}")
        info = TargetFile(
            length=release.length, hashes={"sha256": release.bundle_sha256}, path=target_path(release.channel),
            unrecognized_fields={"custom": release.custom()},
        )
        targets.signed.targets[info.path] = info
        self._commit(targets, signers)
        if record:
            self._record(release)
        return release

    def store_bundle(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.bundles_dir / f"{sha}.edgepkg"
        if not target.exists():
            write_atomically(target, data)
        return sha

    def publish(
        self,
        bundle: str | os.PathLike[str],
        *,
        channel: str = "stable",
        rollout: float = 100.0,
        devices: Sequence[str] = (),
        public_key: Any = None,
        allow_older: bool = False,
    ) -> Release:
        """Verify ``bundle`` (hashes, signature with ``public_key``, self-test), store it and
        make it the channel's release. An older registry version than the channel's current
        one is refused (that is ``rollback``'s job) unless ``allow_older``."""
        check_channel(channel)
        data, model = self._verified(bundle, public_key)
        with self._locked():
            current = self.channels().get(channel)
            if current is not None and current.model == model.name and not allow_older:
                if _version(model.version) < _version(current.version):
                    raise PublishError(
                        f"{model.name} v{model.version} is older than v{current.version}, which channel {channel!r} offers "
                        f"(release {current.release}); devices refuse older models. Use: edgepack release rollback --channel {channel}"
                    )
            sha = self.store_bundle(data)
            release = Release(
                release=self._next_release(), channel=channel, model=model.name, version=str(model.version),
                bundle_sha256=sha, length=len(data), rollout=rollout, devices=tuple(devices), kind="publish",
                published_at=now_utc().isoformat(),
            )
            return self._set_channel(release, record=True)

    @staticmethod
    def _verified(bundle: str | os.PathLike[str], public_key: Any) -> tuple[bytes, Any]:
        """The bundle's bytes and model, after the runtime's full verification and self-test."""
        from runtime import EdgeError, load

        path = Path(bundle)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read bundle {str(path)!r}: {exc.strerror or exc}") from exc
        try:
            model = load(data, public_key=public_key, require_signature=public_key is not None)
        except EdgeError as exc:
            raise PublishError(f"bundle {path} is not publishable: {exc}") from exc
        return data, model

    def _channel_release(self, channel: str) -> Release:
        check_channel(channel)
        current = self.channels().get(channel)
        if current is None:
            raise PublishError(f"channel {channel!r} has no release yet; publish one first: edgepack release publish BUNDLE --channel {channel}")
        return current

    def promote(self, *, channel: str = "stable", rollout: float = 100.0, devices: Sequence[str] | None = None) -> Release:
        """Widen (or narrow) the channel's current release and lift a halt. The release
        number stays, so every device already in keeps its place: buckets only grow."""
        with self._locked():
            current = self._channel_release(channel)
            changed = replace(current, rollout=rollout, halted=False, devices=tuple(devices) if devices is not None else current.devices)
            return self._set_channel(changed, record=False)

    def halt(self, *, channel: str = "stable") -> Release:
        """Stop the channel's release reaching more devices (devices on it stay on it)."""
        with self._locked():
            return self._set_channel(replace(self._channel_release(channel), halted=True), record=False)

    def rollback(self, *, channel: str = "stable", to_release: int | None = None, bundle: str | os.PathLike[str] | None = None,
                 public_key: Any = None, rollout: float = 100.0) -> Release:
        """A new release on ``channel`` pointing at an older bundle: the bundle of release
        ``to_release``, or the file ``bundle`` (e.g. what devices were provisioned with by
        hand, verified like a publish), or by default the bundle of the last release before
        the current one that named a different bundle."""
        if bundle is not None and to_release is not None:
            raise PublishError("give the release to go back to or a bundle file, not both")
        verified = self._verified(bundle, public_key) if bundle is not None else None
        with self._locked():
            current = self._channel_release(channel)
            earlier = [r for r in self.history() if r.channel == channel and r.release < current.release]
            if verified is not None:
                data, model = verified
                sha = self.store_bundle(data)
                target = Release(release=0, channel=channel, model=model.name, version=str(model.version), bundle_sha256=sha,
                                 length=len(data), rollout=rollout)
            elif to_release is not None:
                matches = [r for r in self.history() if r.release == to_release]
                if not matches:
                    raise PublishError(f"there is no release {to_release}; see: edgepack fleet status")
                target = matches[0]
            else:
                older = [r for r in earlier if r.bundle_sha256 != current.bundle_sha256]
                if not older:
                    raise PublishError(
                        f"channel {channel!r} has no earlier release with another bundle; name the bundle to go back to: "
                        f"edgepack release rollback --channel {channel} --bundle FILE"
                    )
                target = older[-1]
            release = Release(
                release=self._next_release(), channel=channel, model=target.model, version=target.version,
                bundle_sha256=target.bundle_sha256, length=target.length, rollout=rollout, kind="rollback",
                published_at=now_utc().isoformat(),
            )
            return self._set_channel(release, record=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-sign snapshot and timestamp when past half their validity (or ``force``).

        Returns whether anything was written."""
        with self._locked():
            timestamp, snapshot, targets = self._current()
            now = now_utc()
            half_ts = dt.timedelta(days=self.expiry.timestamp_days / 2)
            half_snap = dt.timedelta(days=self.expiry.snapshot_days / 2)
            half_targets = dt.timedelta(days=self.expiry.targets_days / 2)
            if force or targets.signed.expires - now < half_targets:
                self._commit(targets, self._signers("targets", "snapshot", "timestamp"))
                return True
            if snapshot.signed.expires - now < half_snap:
                self._commit(targets, self._signers("targets", "snapshot", "timestamp"))
                return True
            if timestamp.signed.expires - now < half_ts:
                snapshot_bytes = (self.metadata_dir / f"{snapshot.signed.version}.snapshot.json").read_bytes()
                self._write_timestamp(timestamp.signed.version + 1, snapshot.signed.version, snapshot_bytes,
                                      self._signers("timestamp")["timestamp"])
                return True
            return False

    def rotate_key(self, role: str) -> str:
        """Replace ``role``'s key: a new root version lists the new key (signed by the old
        and, for root, the new root key), then the role's metadata is re-signed. Devices
        pick the new root up on their next full refresh. Returns the new keyid."""
        if role not in keys.ROLES:
            raise ReleaseError(f"unknown role {role!r}; expected one of {', '.join(keys.ROLES)}")
        with self._locked():
            old_root = self.root_metadata()
            old_root_signer = keys.load(self.keys_dir, "root")
            new_root = Metadata(Root.from_dict(old_root.signed.to_dict()))
            for keyid in list(new_root.signed.roles[role].keyids):
                new_root.signed.revoke_key(keyid, role)
            # Keep the old key file until the new root is written: a crash in between leaves a usable repository.
            backup = keys.key_path(self.keys_dir, role).with_suffix(".pem.old")
            os.replace(keys.key_path(self.keys_dir, role), backup)
            signer = keys.generate(self.keys_dir, role)
            new_root.signed.add_key(signer.public_key, role)
            new_root.signed.version += 1
            new_root.signed.expires = expiry_in(self.expiry.root_days)
            new_root.sign(old_root_signer)
            if role == "root":
                new_root.sign(signer, append=True)
            write_atomically(self.metadata_dir / f"{new_root.signed.version}.root.json", new_root.to_bytes())
            backup.unlink()
            _, _, targets = self._current()
            self._commit(targets, self._signers("targets", "snapshot", "timestamp"))
            return signer.public_key.keyid


def _version(text: str) -> int:
    return int(text) if str(text).isdigit() else 0
