"""Attacks on the release channel: each refused with a clear reason, the device staying on its bundle."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from home.releases import ExpiryPolicy, ReleaseRepository
from tests.runtime import builder

from .support import Device, Home, wait_for


def refused(device: Device, *fragments: str) -> str:
    code, result, stderr = device.once("--once", "--gate-seconds", "0")
    assert code == 1 and result["outcome"] == "refused", (code, result, stderr[-3000:])
    for fragment in fragments:
        assert fragment in result["detail"], result["detail"]
    return result["detail"]


def reported(home: Home, device: Device, release: int, fragment: str) -> None:
    # Earlier reports of the same release (downloading, say) may come first: wait for the refusal itself.
    state = wait_for(lambda: (s := home.device_states(release).get(device.device_id)) and s["state"] == "failed" and s,
                     30, what="the refusal reported home")
    assert fragment in state["reason"], state


def test_expired_metadata_is_refused(home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple) -> None:
    device = make_device("victim")
    # The repository stopped being refreshed: its timestamp expired (a freeze, or a replay of an old one).
    stale = ReleaseRepository(home.repo.root, expiry=ExpiryPolicy(timestamp_days=-1))
    stale.publish(bundles["v2"].path, public_key=keys[1])
    refused(device, "timestamp.json is expired", "expired metadata")
    assert device.current_sha() == bundles["v1"].bundle.sha256
    reported(home, device, 0, "expired")


def test_an_older_repository_state_is_refused(home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple) -> None:
    device = make_device("victim")
    home.repo.publish(bundles["v1"].path, public_key=keys[1])
    old_timestamp = (home.repo.metadata_dir / "timestamp.json").read_bytes()
    home.repo.publish(bundles["v2"].path, public_key=keys[1])
    code, result, stderr = device.once("--once", "--gate-seconds", "0")
    assert result["outcome"] == "gate_passed", (result, stderr[-2000:])
    v2 = bundles["v2"].bundle.sha256
    assert device.current_sha() == v2
    # The attacker serves the repository as it was before release 2 (validly signed, but older).
    (home.repo.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    refused(device, "timestamp version", "must be >=", "rollback")
    assert device.current_sha() == v2


def test_an_older_model_published_as_a_new_release_is_refused(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("victim")
    home.repo.publish(bundles["v2"].path, public_key=keys[1])
    assert device.once("--once", "--gate-seconds", "0")[1]["outcome"] == "gate_passed"
    # Not a rollback release: a normal one carrying the old v1 bundle (home refuses it unless forced).
    release = home.repo.publish(bundles["v1"].path, public_key=keys[1], allow_older=True)
    detail = refused(device, "older than version 2")
    assert device.current_sha() == bundles["v2"].bundle.sha256
    reported(home, device, release.release, "older than version 2")
    assert detail


def test_metadata_signed_with_the_wrong_key_is_refused(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("victim")
    home.repo.publish(bundles["v2"].path, public_key=keys[1])
    path = home.repo.metadata_dir / "timestamp.json"
    forged = Metadata.from_bytes(path.read_bytes())
    forged.signed.version += 1
    forged.signed.expires = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=1)
    forged.sign(CryptoSigner.generate_ed25519())  # a key the trusted root does not name
    path.write_bytes(forged.to_bytes())
    refused(device, "timestamp was signed by 0/1 keys", "not signed by the key")
    assert device.current_sha() == bundles["v1"].bundle.sha256


def test_a_bundle_whose_hash_does_not_match_is_refused(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("victim")
    release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
    served = home.repo.bundles_dir / f"{release.bundle_sha256}.edgepkg"
    original = served.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    served.write_bytes(bytes(data))
    refused(device, "does not match the signed release")
    assert device.current_sha() == bundles["v1"].bundle.sha256
    assert not list((device.store_root / ".staging").glob("*.download"))  # the bad bytes are not kept
    reported(home, device, release.release, "does not match")
    # A transport fault, not a bad release: once the right bytes are served again, the device takes it.
    served.write_bytes(original)
    code, result, _ = device.once("--once", "--gate-seconds", "0")
    assert result["outcome"] == "gate_passed" and device.current_sha() == release.bundle_sha256


def test_a_bundle_larger_than_announced_is_cut_off(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("victim")
    release = home.repo.publish(bundles["v2"].path, public_key=keys[1])
    served = home.repo.bundles_dir / f"{release.bundle_sha256}.edgepkg"
    with open(served, "ab") as handle:
        handle.write(b"\0" * (4 << 20))  # endless data, as far as the device is concerned
    refused(device, f"more than the {release.length} bytes")
    assert device.current_sha() == bundles["v1"].bundle.sha256
    assert not list((device.store_root / ".staging").glob("*.download"))


def test_mix_and_match_metadata_is_refused(
    home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("victim")
    home.repo.publish(bundles["v1"].path, public_key=keys[1])
    assert device.once("--once")[1]["outcome"] == "current"
    home.repo.publish(bundles["v2"].path, public_key=keys[1])
    versions = home.repo.versions()
    # The new snapshot names targets version N; the attacker serves an older, validly signed targets under that name.
    older = home.repo.metadata_dir / f"{versions['targets'] - 1}.targets.json"
    shutil.copyfile(older, home.repo.metadata_dir / f"{versions['targets']}.targets.json")
    refused(device, "mix-and-match")
    assert device.current_sha() == bundles["v1"].bundle.sha256


def test_an_endless_timestamp_is_cut_off(home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built]) -> None:
    device = make_device("victim")
    (home.repo.metadata_dir / "timestamp.json").write_bytes(b" " * (1 << 20))
    refused(device, "over 16384 bytes", "endless data")
    assert device.current_sha() == bundles["v1"].bundle.sha256
