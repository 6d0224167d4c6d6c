"""The release repository's own rules, and key rotation as a device sees it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from home.releases import PublishError, ReleaseError, ReleaseRepository, parse_rollout
from tests.runtime import builder

from .support import Device, Home


def test_rollout_percentages_parse_or_say_what_was_expected() -> None:
    assert parse_rollout("10%") == 10.0 and parse_rollout("100") == 100.0 and parse_rollout(0.5) == 0.5
    for bad in ("ten", "101%", "-1"):
        with pytest.raises(PublishError, match="rollout"):
            parse_rollout(bad)


def test_publish_rules(tmp_path: Path, bundles: dict[str, builder.Built], keys: tuple) -> None:
    repo = ReleaseRepository.create(tmp_path / "releases")
    with pytest.raises(ReleaseError, match="already holds a release repository"):
        ReleaseRepository.create(tmp_path / "releases")
    with pytest.raises(ReleaseError, match="release init"):
        ReleaseRepository(tmp_path / "nothing")
    with pytest.raises(PublishError, match="channel 'Stable!' is not allowed"):
        repo.publish(bundles["v2"].path, channel="Stable!")
    with pytest.raises(PublishError, match="has no release yet"):
        repo.promote(channel="stable")
    first = repo.publish(bundles["v2"].path, rollout=10.0, public_key=keys[1])
    with pytest.raises(PublishError, match="older than v2.*release rollback"):
        repo.publish(bundles["v1"].path, public_key=keys[1])
    promoted = repo.promote(rollout=50.0)
    assert promoted.release == first.release and promoted.rollout == 50.0  # same number: buckets only grow
    assert repo.channels()["stable"].rollout == 50.0
    halted = repo.halt()
    assert halted.halted and not repo.promote(rollout=60.0).halted
    with pytest.raises(PublishError, match="not publishable"):
        repo.publish(bundles["v2"].path, public_key=_other_key(tmp_path))
    versions = repo.versions()
    assert versions["root"] == 1 and versions["targets"] == versions["snapshot"] == versions["timestamp"] == 5


def _other_key(tmp_path: Path) -> Path:
    from runtime.signing import generate_keypair

    return generate_keypair(tmp_path / "other")[1]


@pytest.mark.parametrize("role", ["timestamp", "targets", "root"])
def test_a_rotated_key_is_taken_up_by_devices_through_the_new_root(
    role: str, home: Home, make_device: Callable[..., Device], bundles: dict[str, builder.Built], keys: tuple
) -> None:
    device = make_device("rotating")
    home.repo.publish(bundles["v1"].path, public_key=keys[1])
    assert device.once("--once")[1]["outcome"] == "current"
    home.repo.rotate_key(role)
    assert home.repo.root_version() == 2
    home.repo.publish(bundles["v2"].path, public_key=keys[1])  # signed with the new key where it was rotated
    code, result, stderr = device.once("--once", "--gate-seconds", "0")
    assert code == 0 and result["outcome"] == "gate_passed", (result, stderr[-2000:])
    assert (device.store_root / ".updates" / "tuf" / "root_history" / "2.root.json").exists()
    assert device.current_sha() == bundles["v2"].bundle.sha256
