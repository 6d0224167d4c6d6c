"""``UpdateLoop``: poll the home service's TUF repository, take the channel's release when the
staged rollout includes this device, install it into the model store, watch its health.

One poll:

1. deliver reports left in the outbox; advance an open health gate (maybe roll back);
2. a conditional GET of ``timestamp.json`` (``If-None-Match``): a 304 ends the poll;
3. otherwise a full ngclient refresh (root N+1, timestamp, snapshot, targets; every TUF
   check), then the channel's target ``channels/<channel>.edgepkg`` and its signed
   ``custom.edgepack`` release;
4. refuse a release numbered below the floor, skip a halted, rejected or not-for-us one;
5. download with HTTP Range into ``STORE/.staging/<sha256>.download`` (never more than
   the signed length), verify it against the signed length and sha256, then
   ``ModelStore.install`` (the bundle's own hashes, signature, self-test, atomic switch);
6. open the health gate: golden self-test of the installed bundle, then the error rate
   over the first N predictions or M seconds (counted by the serving process); a failure
   rolls the store back to the previous bundle and reports why.

Crash points (``EDGEPACK_STORE_PAUSE_AT``, as in ``runtime.store``): ``downloading``
(half the bundle written), ``downloaded`` (before verification), then the store's own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx

from runtime.store import ModelStore, pause_at

from .errors import ConfigError, DownloadInterrupted, UpdateRefused
from .fetcher import HttpxFetcher
from .gate import HealthGateSteps
from .result import PollResult
from .options import UpdateOptions
from runtime.release import Release

from .release import parse_release
from .rollout import bucket, takes
from .state import UpdateState, load_state, save_state

log = logging.getLogger("edgepack.updates")

UPDATES_DIR = ".updates"
TIMESTAMP_MAX = 16384
PAUSE_POINTS = ("downloading", "downloaded")


def _reason(exc: Exception) -> str:
    """A TUF error as a sentence naming the attack it stopped."""
    from tuf.api import exceptions as tuf_errors

    text = str(exc) or type(exc).__name__
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return f"metadata refused: {text} (expired metadata: the repository is frozen or replayed)"
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return f"metadata refused: {text} (an older or mixed-up repository state: rollback or mix-and-match)"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return f"metadata refused: {text} (not signed by the key(s) the trusted root names)"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return f"metadata refused: {text} (does not match what the signed snapshot/timestamp announce: mix-and-match)"
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return f"metadata refused: {text} (larger than allowed: endless data)"
    return f"metadata refused: {type(exc).__name__}: {text}"


class UpdateLoop(HealthGateSteps):
    """The device's update loop over one store and one channel (see the module docstring)."""

    def __init__(self, options: UpdateOptions, *, client: httpx.Client | None = None) -> None:
        self.options = options
        self.store = ModelStore(options.store, create=True)
        self.dir = self.store.root / UPDATES_DIR
        self.metadata_dir = self.dir / "tuf"
        self.metadata_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        try:
            self.trusted_root = Path(options.trusted_root).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the trusted root {options.trusted_root} ({exc.strerror or exc}); provision the device with "
                "the release repository's metadata/1.root.json"
            ) from exc
        if options.public_key is None and not options.allow_unsigned:
            raise ConfigError("give the bundle signing key (--public-key), or --allow-unsigned to install unsigned bundles")
        self.state: UpdateState = load_state(self.state_path)
        base = options.endpoint.rstrip("/")
        self.metadata_url = f"{base}/v1/tuf/metadata/"
        self.targets_url = f"{base}/v1/tuf/targets/"
        self.status_url = f"{base}/v1/releases/status"
        self.fetcher = HttpxFetcher(options.token, timeout=options.timeout, client=client)
        self._settled = False
        self._last_full = 0.0
        self._trusted_until = 0.0
        self._sent: set[tuple[Any, ...]] = set()

    def close(self) -> None:
        self.fetcher.close()

    # -- reporting ----------------------------------------------------------------------

    def _report(self, state: str, *, release: int, reason: str | None = None, channel: str | None = None,
                sha: str | None = None) -> None:
        key = (release, state, reason)
        if key in self._sent:
            return
        self._sent.add(key)
        self.state.outbox.append({"release": release, "state": state, "reason": reason, "channel": channel or self.options.channel,
                                  "bundle_sha256": sha})
        save_state(self.state_path, self.state)
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        sent = 0
        for report in self.state.outbox:
            try:
                response = self.fetcher.client.post(self.status_url, json=report)
            except httpx.HTTPError as exc:
                log.info("report of release %s not delivered yet (%s); kept for the next poll", report["release"], exc)
                break
            if response.status_code >= 500:
                break
            if response.status_code >= 400:
                log.warning("home refused the report %s: %s %s", report, response.status_code, response.text[:200])
            sent += 1
        if sent:
            del self.state.outbox[:sent]
            save_state(self.state_path, self.state)

    # -- polling ------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        if self.state.outbox:
            self._flush_outbox()
        if self.state.gate is not None:
            result = self._advance_gate()
            if result is not None:
                return result
        timestamp_url = self.metadata_url + "timestamp.json"
        now = time.time()
        full = not self._settled or now - self._last_full > self.options.full_refresh_seconds or now > self._trusted_until
        if full:
            self.fetcher.forget(timestamp_url)
        from tuf.api.exceptions import DownloadLengthMismatchError

        try:
            changed = self.fetcher.poll_timestamp(timestamp_url, TIMESTAMP_MAX)
        except DownloadLengthMismatchError as exc:
            self.fetcher.forget(timestamp_url)
            return self._refused(UpdateRefused(_reason(exc)))
        except Exception as exc:  # noqa: BLE001 - any network failure: try again next poll
            self._settled = False
            return PollResult(outcome="offline", detail=f"home not reachable: {exc}")
        if not changed:
            return PollResult(outcome="unchanged")
        return self._refresh_and_apply(timestamp_url)

    def _refresh_and_apply(self, timestamp_url: str) -> PollResult:
        from tuf.api import exceptions as tuf_errors
        from tuf.ngclient import Updater

        try:
            updater = Updater(
                str(self.metadata_dir), self.metadata_url, target_base_url=self.targets_url, fetcher=self.fetcher,
                bootstrap=self.trusted_root,
            )
            updater.refresh()
            info = updater.get_targetinfo(f"channels/{self.options.channel}.edgepkg")
        except tuf_errors.DownloadError as exc:
            if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
                return self._refused(UpdateRefused(_reason(exc)))
            self._settled = False
            self.fetcher.forget(timestamp_url)
            return PollResult(outcome="offline", detail=f"metadata download failed: {exc}")
        except tuf_errors.RepositoryError as exc:
            return self._refused(UpdateRefused(_reason(exc)))
        self._last_full = time.time()
        trusted = updater._trusted_set  # the expiry of what was just verified: a 304 is trusted only until then
        self._trusted_until = min(trusted.timestamp.expires.timestamp(), trusted.snapshot.expires.timestamp(),
                                  trusted.targets.expires.timestamp())
        self._settled = True
        if info is None:
            return PollResult(outcome="no_release", detail=f"channel {self.options.channel!r} has no release")
        try:
            release = parse_release(info, self.options.channel)
            return self._consider(release, info)
        except UpdateRefused as exc:
            return self._refused(exc)

    def _refused(self, exc: UpdateRefused) -> PollResult:
        log.error("update refused: %s; staying on the current bundle", exc.reason)
        self._settled = True  # until the repository changes: its ETag does, and the next poll looks again
        if exc.release and exc.permanent:
            self.state.rejected[str(exc.release)] = exc.reason
            save_state(self.state_path, self.state)
        self._report("failed", release=exc.release, reason=exc.reason, channel=exc.channel, sha=exc.bundle_sha256)
        return PollResult(outcome="refused", detail=exc.reason, release=exc.release or None)

    def _consider(self, release: Release, info: Any) -> PollResult:
        channel = self.options.channel
        floor = self.state.floors.get(channel, 0)
        if release.release < floor:
            raise UpdateRefused(
                f"release {release.release} is older than release {floor}, which this device already took on channel "
                f"{channel!r}; an older release is never installed again",
                release=0, channel=channel, bundle_sha256=release.bundle_sha256,
            )
        current = self.store.state().current
        if current is not None and current.sha256 == release.bundle_sha256:
            self._discard_download(release.bundle_sha256)
            self._raise_floor(release.release)
            self._report("active", release=release.release, channel=channel, sha=release.bundle_sha256)
            return PollResult(outcome="current", release=release.release)
        if str(release.release) in self.state.rejected:
            return PollResult(outcome="rejected", detail=self.state.rejected[str(release.release)], release=release.release)
        if release.halted:
            return PollResult(outcome="halted", detail=f"release {release.release} is halted", release=release.release)
        if not takes(self.options.device_id, release.release, release.rollout, release.devices):
            where = bucket(self.options.device_id, release.release)
            return PollResult(outcome="not_selected", release=release.release,
                              detail=f"bucket {where:.2f} is not under the rollout of {release.rollout:g}%")
        return self._apply(release, info)

    def _discard_download(self, sha: str) -> None:
        (self.store.root / ".staging" / f"{sha}.download").unlink(missing_ok=True)

    def _raise_floor(self, number: int) -> None:
        channel = self.options.channel
        if self.state.floors.get(channel, 0) < number:
            self.state.floors[channel] = number
            save_state(self.state_path, self.state)

    def _apply(self, release: Release, info: Any) -> PollResult:
        from tuf.api import exceptions as tuf_errors

        from runtime.errors import DowngradeError, EdgeError

        channel, sha = self.options.channel, release.bundle_sha256
        self._report("offered", release=release.release, channel=channel, sha=sha)
        staging = self.store.root / ".staging"
        staging.mkdir(mode=0o750, exist_ok=True)
        part = staging / f"{sha}.download"
        url = f"{self.targets_url}channels/{sha}.{channel}.edgepkg"
        if part.exists():
            log.info("resuming the download of release %s at %d of %d bytes", release.release, part.stat().st_size, release.length)
        paused = [False]

        def pause(written: int) -> None:
            if not paused[0] and written >= release.length // 2:
                paused[0] = True
                pause_at("downloading")

        try:
            self.fetcher.download_resumable(url, part, release.length, pause=pause)
        except DownloadInterrupted as exc:
            self._settled = False  # not done: the next poll resumes even if nothing changed at home
            return PollResult(outcome="offline", detail=str(exc), release=release.release)
        except UpdateRefused as exc:
            raise UpdateRefused(exc.reason, release=release.release, channel=channel, bundle_sha256=sha) from None
        pause_at("downloaded")
        try:
            with open(part, "rb") as handle:
                info.verify_length_and_hashes(handle)
        except tuf_errors.LengthOrHashMismatchError as exc:
            part.unlink(missing_ok=True)
            raise UpdateRefused(
                f"the downloaded bundle does not match the signed release ({exc}); discarded",
                release=release.release, channel=channel, bundle_sha256=sha,
            ) from None
        self._report("downloaded", release=release.release, channel=channel, sha=sha)
        previous = self.store.state().current
        # The gate is on disk before the switch: a crash from here on is resumed on restart.
        self.state.gate = {"release": release.release, "channel": channel, "sha256": sha, "started_at": None,
                           "previous": previous.sha256 if previous else None, "selftest": False}
        save_state(self.state_path, self.state)
        try:
            self.store.install(
                part, public_key=self.options.public_key, require_signature=self.options.public_key is not None,
                allow_downgrade=release.kind == "rollback",
            )
        except DowngradeError as exc:
            self.state.gate = None
            raise UpdateRefused(f"release {release.release} refused: {exc}", release=release.release, channel=channel,
                                bundle_sha256=sha, permanent=True) from None
        except EdgeError as exc:
            self.state.gate = None
            part.unlink(missing_ok=True)
            raise UpdateRefused(f"bundle of release {release.release} refused: {exc}", release=release.release,
                                channel=channel, bundle_sha256=sha, permanent=True) from None
        part.unlink(missing_ok=True)
        self._open_gate()
        self._raise_floor(release.release)
        log.info("release %s installed: %s v%s (sha256 %s); health gate open", release.release, release.model,
                 release.version, sha[:12])
        self._report("active", release=release.release, reason="switched; health gate open", channel=channel, sha=sha)
        return PollResult(outcome="installed", release=release.release, detail=f"{release.model} v{release.version}")

    # -- running ------------------------------------------------------------------------

    def run(self, *, stop: Any = None) -> None:
        """Poll until ``stop`` (a ``threading.Event``) is set; an open gate is checked every second."""
        last: tuple[str, int | None] | None = None
        while stop is None or not stop.is_set():
            try:
                result = self.poll_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad poll
                log.exception("update poll failed; retrying")
                result = PollResult(outcome="offline")
            said = (result.outcome, result.release)
            if result.outcome != "unchanged" and said != last:
                log.info("update poll: %s, release %s%s", result.outcome, result.release,
                         f" ({result.detail})" if result.detail else "")
            last = said if result.outcome != "unchanged" else last
            wait = 1.0 if self.state.gate is not None or result.outcome == "installed" else self.options.interval
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
