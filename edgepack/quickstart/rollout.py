"""The quickstart's rollout step: a device running version 1 is switched to version 2 by a release.

A device store starts on a bundle of registry version 1 (installed as a USB stick would);
an app follows the store and predicts; home publishes the production bundle (version 2)
as a signed TUF release; the device's update loop takes it, the app switches without a
restart, and the health gate passes on the app's own predictions.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICE_ID = "quickstart-device"
OWNED = ("releases", "device-store", "device.token")


@dataclass(frozen=True, kw_only=True)
class RolloutResult:
    before: str
    """Version the running app served before the release."""
    after: str
    """Version it served after."""
    release: int
    """The release number published."""
    switch_seconds: float
    """From ``release publish`` until the running app served the new version."""
    gate: str
    """What the health gate said."""
    restarts: int
    """Restarts of the app process (always 0: it is this process)."""

    def lines(self) -> list[str]:
        return [
            f"  published fire-risk version {self.after} as release {self.release} on channel stable (signed TUF metadata)",
            f"  the running device switched from version {self.before} to version {self.after} in {self.switch_seconds:.1f} s "
            f"without a restart",
            # "rows predicted": the report's "N predictions" line is the device's stream, not the gate's.
            f"  {self.gate.replace(' predictions,', ' rows predicted,')}",
        ]


def demo(root: Path, *, url: str, built_path: Path, public_key: Path, tracking_uri: str, reference_csv: Path,
         signing_key: Path, rows: list[dict[str, Any]]) -> RolloutResult:
    from home import add_token
    from home.releases import ReleaseRepository
    from packager import build_bundle
    from runtime.follower import StoreFollower
    from runtime.store import ModelStore

    from edgepack.updates import GateOptions, UpdateLoop, UpdateOptions

    for name in OWNED:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    first = build_bundle("models:/fire-risk/1", root / "dist" / "fire-risk-v1.edgepkg", tracking_uri=tracking_uri,
                         reference_data=reference_csv, signing_key=signing_key)
    store = ModelStore(root / "device-store", create=True)
    store.install(first.path, public_key=public_key, require_signature=True)
    repo = ReleaseRepository.create(root / "releases")  # the collector serves releases/ next to its database
    token = add_token(root / "tokens.json", DEVICE_ID)
    follower = StoreFollower(store, interval=0.1, health=True, public_key=public_key, require_signature=True).start()
    stop = threading.Event()

    def app() -> None:  # the device's application, predicting all along
        i = 0
        while not stop.wait(0.005):
            follower.model.predict(rows[i % len(rows)])
            i += 1

    worker = threading.Thread(target=app, daemon=True)
    worker.start()
    loop = UpdateLoop(UpdateOptions(store=store.root, endpoint=url, token=token, device_id=DEVICE_ID,
                                    trusted_root=repo.metadata_dir / "1.root.json", public_key=public_key,
                                    gate=GateOptions(predictions=20, seconds=30)))
    try:
        before = follower.model.version
        loop.poll_once()  # nothing published yet: the device settles
        release = repo.publish(built_path, public_key=public_key)
        published = time.monotonic()
        switched = None
        gate = ""
        deadline = published + 60
        while time.monotonic() < deadline:
            result = loop.poll_once()
            if switched is None and follower.model.sha256 == release.bundle_sha256:
                switched = time.monotonic() - published
            if result.outcome in ("gate_passed", "rolled_back", "refused"):
                gate = result.detail
                break
            time.sleep(0.1)
        if switched is None:
            raise RuntimeError(f"the device did not switch to release {release.release}: {gate or 'timed out'}")
        return RolloutResult(before=str(before), after=str(follower.model.version), release=release.release,
                             switch_seconds=switched, gate=gate, restarts=0)
    finally:
        stop.set()
        worker.join()
        follower.stop()
        loop.close()
