"""Attacks on the device side from the adversarial review (issue 10): hostile JSON, replayed
old bundles, fail-open verification, oversized models and booleans posing as numbers."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from edgepack.cli import cli
from runtime import BundleError, BundleLimits, DowngradeError, InputError, SignatureError, StateFileError
from runtime.bundle import read_bundle
from runtime.highwater import HighWater

from . import builder

DEEP = 200_000  # far past the interpreter's recursion limit


def _run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert not isinstance(result.exception, RecursionError)
    return result.exit_code, result.stdout, result.stderr


def _deep_manifest(fire_bytes: bytes, tmp_path: Path, name: str = "deep.edgepkg") -> Path:
    """A bundle whose manifest.json nests 200,000 arrays; the old signature is kept."""
    path = tmp_path / name
    path.write_bytes(builder.rezip(fire_bytes, replace={"manifest.json": b"[" * DEEP + b"]" * DEEP}))
    return path


# -- 4: hostile JSON is a BundleError, and with a key it is never parsed ---------------------


def test_deeply_nested_manifest_is_a_bundle_error_everywhere(tmp_path: Path, fire: builder.Built, fire_bytes: bytes) -> None:
    deep = _deep_manifest(fire_bytes, tmp_path)
    for attempt in (lambda: read_bundle(deep), lambda: runtime.load(deep), lambda: runtime.ModelSlot(fire.path).swap(deep)):
        with pytest.raises(BundleError, match="manifest.json: JSON nested too deeply") as err:
            attempt()
        assert err.value.entry == "manifest.json"


def test_with_a_key_the_signature_is_checked_before_the_manifest_is_parsed(
    tmp_path: Path, fire_bytes: bytes, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = _deep_manifest(fire_bytes, tmp_path)
    parsed: list[bytes] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda data, *a, **k: parsed.append(data) or real_loads(data, *a, **k))
    with pytest.raises(SignatureError, match="signature does not match manifest.json"):
        runtime.load(deep, public_key=keys[1])
    assert parsed == []  # the attacker's bytes never reached the parser


def test_verify_refuses_a_deep_manifest_with_exit_3_and_no_traceback(tmp_path: Path, fire_bytes: bytes, keys: tuple[Path, Path]) -> None:
    deep = _deep_manifest(fire_bytes, tmp_path)
    code, out, err = _run("verify", str(deep), "--allow-unsigned")
    assert code == 3 and out == "" and "manifest.json: JSON nested too deeply" in err and "Traceback" not in err
    code, _, err = _run("verify", str(deep), "--public-key", str(keys[1]))
    assert code == 3 and "signature does not match" in err
    code, _, err = _run("inspect", str(deep), "--json")
    assert code == 3 and "manifest.json: JSON nested too deeply" in err


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"format_version": 1, "x": ' + b"[" * 100 + b"]" * 100 + b"}", "JSON nested 101 levels deep, over the limit of 64"),
        (b'{"format_version": 1, "n": ' + b"7" * 5000 + b"}", "not valid JSON: Exceeds the limit"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
    ids=["depth-under-recursion-limit", "5000-digit-integer", "not-utf8"],
)
def test_any_manifest_parse_failure_is_a_bundle_error(tmp_path: Path, fire_bytes: bytes, payload: bytes, message: str) -> None:
    path = tmp_path / "m.edgepkg"
    path.write_bytes(builder.rezip(fire_bytes, drop=["manifest.sig"], replace={"manifest.json": payload}))
    with pytest.raises(BundleError, match=message) as err:
        runtime.load(path)
    assert err.value.entry == "manifest.json"


def test_deeply_nested_golden_set_is_a_bundle_error(tmp_path: Path, fire: builder.Built) -> None:
    path = builder.rewrite(fire.path, tmp_path / "g.edgepkg", files={"golden.json": b"[" * DEEP + b"]" * DEEP})
    with pytest.raises(BundleError, match="golden.json: JSON nested too deeply") as err:
        runtime.load(path)
    assert err.value.entry == "golden.json"


def test_json_depth_is_a_configurable_limit(tmp_path: Path, fire: builder.Built) -> None:
    with pytest.raises(BundleError, match="manifest.json: JSON nested 4 levels deep, over the limit of 3"):
        runtime.load(fire.path, limits=BundleLimits(max_json_depth=3))
    assert runtime.load(fire.path, limits=BundleLimits(max_json_depth=8)).name == "fire-risk"


# -- 5: a validly signed older version is a downgrade ----------------------------------------


def test_swap_to_an_older_signed_version_is_refused(fire: builder.Built, fire_v2: builder.Built, keys: tuple[Path, Path], good_row: dict) -> None:
    slot = runtime.ModelSlot(fire_v2.path, public_key=keys[1], require_signature=True)
    expected = slot.predict(good_row)
    with pytest.raises(DowngradeError, match=r"'fire-risk' version 1 is older than version 2") as err:
        slot.swap(fire.path)
    assert (err.value.version, err.value.floor) == (1, 2)
    assert slot.model.version == "2" and slot.previous is None and slot.predict(good_row) == expected
    # Saying so explicitly goes back; the same version again is not a downgrade.
    assert slot.swap(fire.path, allow_downgrade=True).version == "1"
    assert slot.swap(fire.path).version == "1"


def test_highest_version_survives_a_restart(tmp_path: Path, fire: builder.Built, fire_v2: builder.Built) -> None:
    state = tmp_path / "state" / "versions.json"
    slot = runtime.ModelSlot(fire.path, state_file=state)
    slot.swap(fire_v2.path)
    assert json.loads(state.read_text()) == {"format": 1, "floors": {"fire-risk": 2}}
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert [p.name for p in state.parent.iterdir()] == ["versions.json"]  # no temporary file left behind
    del slot

    # The device restarts and is handed the old bundle: refused before anything serves.
    with pytest.raises(DowngradeError, match="older than version 2"):
        runtime.ModelSlot(fire.path, state_file=state)
    with pytest.raises(DowngradeError):
        runtime.ModelSlot(fire_v2.path, state_file=state).swap(fire.path)
    # An explicit downgrade moves the floor, so the operator's choice survives the next restart.
    runtime.ModelSlot(fire.path, state_file=state, allow_downgrade=True)
    assert HighWater(state).floor("fire-risk") == 1
    assert runtime.ModelSlot(fire.path, state_file=state).model.version == "1"


def test_rollback_is_an_explicit_downgrade(tmp_path: Path, fire: builder.Built, fire_v2: builder.Built) -> None:
    state = tmp_path / "versions.json"
    slot = runtime.ModelSlot(fire.path, state_file=state)
    slot.swap(fire_v2.path)
    assert slot.rollback().version == "1"
    assert HighWater(state).floor("fire-risk") == 1
    assert runtime.ModelSlot(fire.path, state_file=state).model.version == "1"


def test_versions_compare_as_registry_numbers_per_model_name(tmp_path: Path) -> None:
    marks = HighWater(tmp_path / "v.json")
    marks.accept("fire-risk", "10")
    assert marks.check("fire-risk", "10") == 10
    with pytest.raises(DowngradeError, match="version 9 is older than version 10"):
        marks.check("fire-risk", "9")  # as strings "9" > "10"
    assert marks.check("other-model", "1") == 1  # different names are never compared
    marks.accept("fire-risk", "9")  # not a downgrade request: the floor stays
    assert HighWater(tmp_path / "v.json").floor("fire-risk") == 10
    with pytest.raises(DowngradeError, match="expected a registry version number"):
        marks.check("fire-risk", "v3-beta")


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "floors": {"fire-risk": "2"}}', b"[]", b'{"format": 9, "floors": {}}'])
def test_a_damaged_state_file_is_an_error_not_a_reset(tmp_path: Path, fire: builder.Built, content: bytes) -> None:
    state = tmp_path / "versions.json"
    state.write_bytes(content)
    with pytest.raises(StateFileError, match="is damaged") as err:
        runtime.ModelSlot(fire.path, state_file=state)
    assert "delete it only if you accept" in str(err.value)
    assert state.read_bytes() == content


def test_an_unwritable_state_file_keeps_the_old_model_serving(tmp_path: Path, fire: builder.Built, fire_v2: builder.Built) -> None:
    state = tmp_path / "versions.json"
    slot = runtime.ModelSlot(fire.path, state_file=state)
    (tmp_path / ".versions.json.tmp").mkdir()  # the temporary file cannot be created (even by root)
    with pytest.raises(StateFileError, match="cannot write the version state file"):
        slot.swap(fire_v2.path)
    assert slot.model.version == "1" and HighWater(state).floor("fire-risk") == 1


def test_a_write_cut_short_leaves_the_old_floor(tmp_path: Path) -> None:
    # A crash after the temporary file was (partly) written, before the rename.
    state = tmp_path / "versions.json"
    HighWater(state).accept("fire-risk", "4")
    (tmp_path / ".versions.json.tmp").write_bytes(b'{"format": 1, "flo')
    marks = HighWater(state)
    assert marks.floor("fire-risk") == 4
    marks.accept("fire-risk", "5")
    assert HighWater(state).floor("fire-risk") == 5 and not (tmp_path / ".versions.json.tmp").exists()


# -- 6: no key means "not verified", said loudly ----------------------------------------------


@pytest.mark.parametrize("which", ["signed", "unsigned"])
def test_load_without_a_key_warns_once_naming_the_bundle(
    which: str, tmp_path: Path, fire: builder.Built, levels: builder.Built, keys: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    built = fire if which == "signed" else levels
    path = tmp_path / f"{which}.edgepkg"  # a path no other test loaded in this process
    path.write_bytes(built.path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="runtime"):
        model = runtime.load(path)
        model.predict_batch({f.name: built.frame[f.name].head(3).tolist() for f in model.inputs})
        runtime.load(path)
        runtime.ModelSlot(path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert "authenticity was NOT verified" in warnings[0].getMessage()
    assert ("is signed but no public key" if which == "signed" else "is not signed") in warnings[0].getMessage()
    assert model.signature_verified is False
    caplog.clear()
    other = tmp_path / "other.edgepkg"
    other.write_bytes(built.path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="runtime"):
        runtime.load(other)
        verified = tmp_path / "verified.edgepkg"
        verified.write_bytes(fire.path.read_bytes())
        assert runtime.load(verified, public_key=keys[1]).signature_verified is True  # checked: nothing to warn about
    assert [str(other) in r.getMessage() for r in caplog.records] == [True]


def test_verify_without_a_key_is_not_ok(tmp_path: Path, fire: builder.Built, levels: builder.Built, other_keys: tuple[Path, Path]) -> None:
    resigned = builder.rewrite(fire.path, tmp_path / "resigned.edgepkg", edit=lambda m: m["model"].update(run_id="evil"),
                               signing_key=other_keys[0])
    for path, why in ((fire.path, "signed, but no --public-key was given"), (levels.path, "the bundle is not signed"),
                      (resigned, "signed, but no --public-key was given")):
        code, out, err = _run("verify", str(path))
        assert code == 4, (path, out, err)
        assert out.startswith("UNVERIFIED ") and f"authenticity NOT checked ({why})" in out and "OK" not in out
        assert "pass --public-key" in err and "--allow-unsigned" in err
        code, out, _ = _run("verify", str(path), "--allow-unsigned")
        assert code == 0 and out.startswith("UNVERIFIED ")


def test_verify_with_the_right_key_only(fire: builder.Built, keys: tuple[Path, Path], other_keys: tuple[Path, Path]) -> None:
    code, out, _ = _run("verify", str(fire.path), "--public-key", str(keys[1]))
    assert code == 0 and out.startswith("OK fire-risk version 1") and "signature verified" in out
    code, _, err = _run("verify", str(fire.path), "--public-key", str(other_keys[1]))
    assert code == 3 and "signature does not match" in err


# -- 7: the model size is bounded --------------------------------------------------------------


def test_model_size_is_bounded_by_bundle_limits(tmp_path: Path, fire: builder.Built) -> None:
    size = len(fire.bundle.files["model.onnx"])
    with pytest.raises(BundleError, match=rf"model.onnx: model is {size} bytes uncompressed, over the limit of {size - 1}") as err:
        runtime.load(fire.path, limits=BundleLimits(max_model_bytes=size - 1))
    assert "BundleLimits.max_model_bytes" in str(err.value) and err.value.entry == "model.onnx"
    assert runtime.load(fire.path, limits=BundleLimits(max_model_bytes=size)).name == "fire-risk"
    slot = runtime.ModelSlot(fire.path)
    with pytest.raises(BundleError, match="over the limit"):
        runtime.ModelSlot(fire.path, limits=BundleLimits(max_total_bytes=size))
    assert slot.model.name == "fire-risk"


def test_a_model_that_lies_about_its_size_is_still_bounded(tmp_path: Path, fire: builder.Built, fire_bytes: bytes) -> None:
    size = len(fire.bundle.files["model.onnx"])
    entries = [(n, d, 1000 if n == "model.onnx" else None) for n, d in builder.entries_of(fire_bytes)]
    path = tmp_path / "lies.edgepkg"
    path.write_bytes(builder.raw_zip(entries))
    with pytest.raises(BundleError, match="model.onnx: "):
        runtime.load(path, limits=BundleLimits(max_model_bytes=size // 2))


def test_bundle_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="BundleLimits.max_model_bytes must be an int >= 1"):
        BundleLimits(max_model_bytes=0)


def test_the_default_model_bound_is_256_mib() -> None:
    assert BundleLimits().max_model_bytes == 256 << 20


# -- 16: booleans are not numbers ----------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, np.bool_(True)], ids=["True", "False", "numpy.bool_"])
def test_a_bool_for_a_numeric_feature_is_refused(fire_model: runtime.EdgeModel, good_row: dict, value: object) -> None:
    with pytest.raises(InputError, match=r"feature 'temp c' got bool (np\.)?(True|False)_?; expected a number") as err:
        fire_model.predict({**good_row, "temp c": value})
    assert err.value.feature == "temp c"
    with pytest.raises(InputError) as err:
        fire_model.predict([good_row, {**good_row, "wind_kmh": value}])
    assert (err.value.feature, err.value.row) == ("wind_kmh", 1)


def test_a_bool_array_for_a_numeric_feature_is_refused(fire_model: runtime.EdgeModel, good_row: dict) -> None:
    columns = {k: [v, v] for k, v in good_row.items()}
    with pytest.raises(InputError, match=r"feature 'temp c' expects numbers, got an array of bool") as err:
        fire_model.predict_batch({**columns, "temp c": np.array([True, False])})
    assert err.value.feature == "temp c"
    with pytest.raises(InputError, match=r"feature 'wind_kmh' got bool True") as err:
        fire_model.predict_batch({**columns, "wind_kmh": [1.5, True]})
    assert (err.value.feature, err.value.row) == ("wind_kmh", 1)
    assert fire_model.predict_batch(columns)["prediction"].shape == (2,)


def test_predict_cli_reports_a_bool_row(fire: builder.Built, good_row: dict) -> None:
    rows = "\n".join(json.dumps(r) for r in (good_row, {**good_row, "temp c": True}))
    code, out, _ = _run("predict", str(fire.path), input=rows)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "prediction" in lines[0]
    assert lines[1]["row"] == 2 and "feature 'temp c' got bool True" in lines[1]["error"]
