"""Manifests come from releases: home monitors a published bundle without an upload."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.runtime import builder

from .support import Home


def _models(home: Home) -> dict:
    response = httpx.get(f"{home.url}/v1/models", headers={"authorization": f"Bearer {home.admin_token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["models"]


def test_a_published_bundle_is_known_to_monitoring_and_a_damaged_one_is_not(
    home: Home, bundles: dict[str, builder.Built], keys: tuple[Path, Path]
) -> None:
    assert _models(home) == {}
    release = home.repo.publish(bundles["v2"].path, channel="stable", public_key=keys[1])

    models = _models(home)
    assert [(m["sha256"], m["version"]) for m in models["fire-risk"]] == [(release.bundle_sha256, "2")]

    # A file in the repository that does not verify is skipped, never registered.
    fake = "0" * 64
    (home.repo.bundles_dir / f"{fake}.edgepkg").write_bytes(b"PK not a bundle")
    assert [m["sha256"] for m in _models(home)["fire-risk"]] == [release.bundle_sha256]
    assert "not adopted for monitoring" in (home.directory / "collector.log").read_text()
