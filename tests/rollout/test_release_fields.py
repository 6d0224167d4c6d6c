"""One definition of a release's signed fields for home and device (runtime.release)."""

from __future__ import annotations

import pytest

from runtime.release import CUSTOM_KEY, Release

SHA = "ab" * 32


def _release(**changes: object) -> Release:
    fields: dict[str, object] = dict(release=4, channel="stable", model="fire-risk", version="7", bundle_sha256=SHA,
                                     length=1234, rollout=12.5, devices=("edge-1",), kind="rollback", published_at="2026-12-01T00:00:00+00:00")
    fields.update(changes)
    return Release(**fields)  # type: ignore[arg-type]


def test_what_home_signs_the_device_reads_back_field_for_field() -> None:
    release = _release()
    custom = release.custom()
    assert custom[CUSTOM_KEY]["rollout_bp"] == 1250 and "rollout" not in custom[CUSTOM_KEY]  # no floats in canonical JSON
    assert Release.from_custom(custom) == release


def test_history_written_with_a_percentage_is_still_read() -> None:
    body = _release().custom()[CUSTOM_KEY]
    body["rollout"] = body.pop("rollout_bp") / 100
    assert Release.from_custom({CUSTOM_KEY: body}).rollout == 12.5


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"release": 0}, "release number 0, expected 1 or more"),
        ({"kind": "sideload"}, "kind 'sideload', expected one of publish, rollback"),
        ({"bundle_sha256": "XYZ"}, "bundle_sha256 'XYZ' is not 64 lowercase hex digits"),
        ({"rollout_bp": 10001}, "rollout 100.01%, expected 0-100%"),
        ({"length": "many"}, "malformed release"),
    ],
)
def test_a_malformed_field_is_named(change: dict[str, object], fragment: str) -> None:
    body = _release().custom()[CUSTOM_KEY] | change
    with pytest.raises(ValueError, match="malformed release") as caught:
        Release.from_custom({CUSTOM_KEY: body})
    assert fragment in str(caught.value)


def test_a_missing_field_or_body_is_named() -> None:
    body = _release().custom()[CUSTOM_KEY]
    del body["model"]
    with pytest.raises(ValueError, match="field 'model' is missing"):
        Release.from_custom({CUSTOM_KEY: body})
    with pytest.raises(ValueError, match=r"no edgepack release \(custom.edgepack\)"):
        Release.from_custom({"other": {}})
