"""Loading refuses every defective, tampered or malicious bundle with a message naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime import BundleError, SelfTestError, SessionOptions, SignatureError
from runtime.bundle import BundleLimits, read_bundle

from . import builder


def _write(tmp_path: Path, data: bytes, name: str = "bad.edgepkg") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- what a good bundle gives ---------------------------------------------------------------


def test_load_exposes_model_attributes(fire: builder.Built, keys: tuple[Path, Path]) -> None:
    model = runtime.load(fire.path, public_key=keys[1], require_signature=True)
    assert (model.name, model.version, model.task) == ("fire-risk", "1", "classification")
    assert model.classes == (0, 1)
    assert model.sha256 == fire.bundle.sha256
    assert model.signed and model.signature_verified
    assert [f.name for f in model.inputs] == list(fire.frame.columns)
    assert model.inputs[3].categories == ("east", "north", "south", "west")
    assert model.manifest["model"]["requested_uri"] == "models:/fire-risk@champion"
    assert model.golden_rows == 20


def test_load_accepts_bundle_bytes(fire: builder.Built) -> None:
    model = runtime.load(fire.path.read_bytes())
    assert model.sha256 == fire.bundle.sha256


def test_session_options_for_small_devices(fire_model: runtime.EdgeModel) -> None:
    options = fire_model._session._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.enable_cpu_mem_arena is False
    assert options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_threads_and_session_options(fire: builder.Built) -> None:
    model = runtime.load(fire.path, threads=2)
    assert model._session._session.get_session_options().intra_op_num_threads == 2
    custom = runtime.load(fire.path, session_options=SessionOptions(intra_op_threads=3, memory_arena=True, allow_spinning=True))
    opts = custom._session._session.get_session_options()
    assert (opts.intra_op_num_threads, opts.enable_cpu_mem_arena) == (3, True)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="threads=2 disagrees"):
        runtime.load(fire.path, threads=2, session_options=SessionOptions(intra_op_threads=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intra_op_threads": 0}, "intra_op_threads must be an int >= 1"),
        ({"optimization": "max"}, "optimization must be"),
        ({"providers": ()}, "at least one execution provider"),
    ],
)
def test_session_options_validate(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionOptions(**kwargs)


def test_unknown_execution_provider_is_a_bundle_error(fire: builder.Built) -> None:
    with pytest.raises(BundleError, match="NoSuchExecutionProvider not available"):
        runtime.load(fire.path, session_options=SessionOptions(providers=("NoSuchExecutionProvider",)))


# -- the container -------------------------------------------------------------------------


def test_flipped_byte_in_model_is_a_hash_mismatch(tmp_path: Path, fire_bytes: bytes) -> None:
    model = dict(builder.entries_of(fire_bytes))["model.onnx"]
    flipped = bytearray(model)
    flipped[len(flipped) // 2] ^= 0xFF
    path = _write(tmp_path, builder.rezip(fire_bytes, replace={"model.onnx": bytes(flipped)}))
    with pytest.raises(BundleError, match=r"^model.onnx: sha256 is [0-9a-f]{64}, manifest says") as info:
        runtime.load(path)
    assert info.value.entry == "model.onnx"


def test_flipped_byte_in_archive_is_refused(tmp_path: Path, fire_bytes: bytes) -> None:
    data = bytearray(fire_bytes)
    # Somewhere inside the compressed body of the first entries, not in the directory.
    data[200] ^= 0xFF
    with pytest.raises(BundleError):
        runtime.load(_write(tmp_path, bytes(data)))


def test_size_mismatch_is_named(tmp_path: Path, fire_bytes: bytes) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, replace={"requirements.txt": b"onnxruntime==1.32.0\nnumpy\nextra\n"}))
    with pytest.raises(BundleError, match=r"requirements.txt: size is \d+ bytes, manifest says 35"):
        runtime.load(path)


def test_renamed_entry_is_unknown(tmp_path: Path, fire_bytes: bytes) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, rename={"model.onnx": "model2.onnx"}))
    with pytest.raises(BundleError, match="model2.onnx: unknown entry"):
        runtime.load(path)


def test_missing_entry_is_named(tmp_path: Path, fire_bytes: bytes) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, drop=["golden.json"]))
    with pytest.raises(BundleError, match="listed in the manifest but missing from the archive: golden.json"):
        runtime.load(path)


def test_extra_entry_is_named(tmp_path: Path, fire_bytes: bytes) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, add=[("wheels/linux/evil-1.0-py3-none-any.whl", b"PK")]))
    with pytest.raises(BundleError, match="in the archive but not listed in the manifest: wheels/linux/evil"):
        runtime.load(path)


@pytest.mark.parametrize("name", ["../evil", "wheels/../../evil.whl", "/etc/passwd", "C:/evil", "wheels\\..\\evil"])
def test_unsafe_names_are_refused(tmp_path: Path, fire_bytes: bytes, name: str) -> None:
    entries = [(n, d, None) for n, d in builder.entries_of(fire_bytes)] + [(name, b"owned", None)]
    with pytest.raises(BundleError, match="unsafe entry name") as info:
        runtime.load(_write(tmp_path, builder.raw_zip(entries)))
    assert info.value.entry == name


def test_duplicate_names_are_refused(tmp_path: Path, fire_bytes: bytes) -> None:
    entries = [(n, d, None) for n, d in builder.entries_of(fire_bytes)]
    evil_model = [(n, b"\x00" * len(d), None) for n, d, _ in entries if n == "model.onnx"]
    with pytest.raises(BundleError, match="model.onnx: duplicate entry name"):
        runtime.load(_write(tmp_path, builder.raw_zip(entries + evil_model)))


def test_entry_declared_as_one_gigabyte_is_refused_before_reading(tmp_path: Path, fire_bytes: bytes) -> None:
    entries = [(n, d, (1 << 30) if n == "golden.json" else None) for n, d in builder.entries_of(fire_bytes)]
    with pytest.raises(BundleError, match=r"golden.json: declared uncompressed size 1073741824 bytes is over the per-entry limit"):
        runtime.load(_write(tmp_path, builder.raw_zip(entries)))
    entries = [(n, d, (1 << 30) if n == "model.onnx" else None) for n, d in builder.entries_of(fire_bytes)]
    with pytest.raises(BundleError, match=r"model.onnx: model is 1073741824 bytes uncompressed, over the limit of 268435456"):
        runtime.load(_write(tmp_path, builder.raw_zip(entries)))


def test_entry_holding_more_than_declared_is_refused(tmp_path: Path, fire_bytes: bytes) -> None:
    entries = [(n, d, 10 if n == "golden.json" else None) for n, d in builder.entries_of(fire_bytes)]
    # zipfile stops at the declared size and then finds the CRC wrong: refused either way.
    with pytest.raises(BundleError, match=r"golden.json: (holds more data than its declared size of 10 bytes|cannot decompress \(Bad CRC-32)"):
        runtime.load(_write(tmp_path, builder.raw_zip(entries)))


def test_zip_bomb_ratio_is_refused(tmp_path: Path, fire_bytes: bytes) -> None:
    bomb = ("wheels/linux/bomb-1.0-py3-none-any.whl", b"\x00" * (4 << 20))
    path = _write(tmp_path, builder.rezip(fire_bytes, add=[bomb]))
    with pytest.raises(BundleError, match=r"bomb-1.0-py3-none-any.whl: compression ratio \d+:1 is over the limit of 200:1"):
        runtime.load(path)


def test_total_size_limit(fire: builder.Built) -> None:
    with pytest.raises(BundleError, match="declared uncompressed total"):
        runtime.load(fire.path, limits=BundleLimits(max_total_bytes=1000))


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a zip archive"):
        runtime.load(_write(tmp_path, b"this is not a bundle"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read bundle"):
        runtime.load(tmp_path / "nowhere.edgepkg")


def test_unknown_format_version(tmp_path: Path, fire_bytes: bytes) -> None:
    manifest = json.loads(dict(builder.entries_of(fire_bytes))["manifest.json"])
    manifest["format_version"] = 2
    with pytest.raises(BundleError, match="manifest.json: unknown format_version 2; this edgepack reads format_version 1"):
        runtime.load(_write(tmp_path, builder.with_manifest(fire_bytes, manifest)))


# -- signatures ----------------------------------------------------------------------------


def test_signature_from_another_key_is_refused(fire: builder.Built, other_keys: tuple[Path, Path]) -> None:
    with pytest.raises(SignatureError, match="manifest.sig: signature does not match manifest.json"):
        runtime.load(fire.path, public_key=other_keys[1])


def test_manifest_changed_after_signing_is_refused(tmp_path: Path, fire_bytes: bytes, keys: tuple[Path, Path]) -> None:
    entries = dict(builder.entries_of(fire_bytes))
    manifest = json.loads(entries["manifest.json"])
    manifest["model"]["version"] = "99"
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    path = _write(tmp_path, builder.rezip(fire_bytes, replace={"manifest.json": data}))
    with pytest.raises(SignatureError, match="signature does not match"):
        runtime.load(path, public_key=keys[1])


def test_unsigned_bundle_when_signature_required(levels: builder.Built, keys: tuple[Path, Path]) -> None:
    with pytest.raises(SignatureError, match="bundle is not signed but a signature is required"):
        runtime.load(levels.path, public_key=keys[1], require_signature=True)
    with pytest.raises(SignatureError, match="not signed"):
        runtime.load(levels.path, require_signature=True)


def test_required_signature_needs_a_key(fire: builder.Built) -> None:
    with pytest.raises(SignatureError, match="no public key was given"):
        runtime.load(fire.path, require_signature=True)


def test_stripped_signature_is_refused(tmp_path: Path, fire_bytes: bytes, keys: tuple[Path, Path]) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, drop=["manifest.sig"]))
    with pytest.raises(SignatureError, match="not signed"):
        runtime.load(path, public_key=keys[1])


def test_garbage_public_key(fire: builder.Built, tmp_path: Path) -> None:
    key = _write(tmp_path, b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "bad.pub")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        runtime.load(fire.path, public_key=key)


# -- content: model, manifest, golden set ---------------------------------------------------


def test_model_that_onnxruntime_cannot_load(tmp_path: Path, fire: builder.Built) -> None:
    path = builder.rewrite(fire.path, tmp_path / "x.edgepkg", files={"model.onnx": b"\x08\x07garbage"})
    with pytest.raises(BundleError, match=r"^model.onnx: onnxruntime [\d.]+ cannot load the model"):
        runtime.load(path)


def _set(path: list, value: object):  # type: ignore[no-untyped-def]
    def edit(manifest: dict) -> None:
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(["inputs", 0, "slot"], 7), r"onnx input 'float_input' has width 3 but its features fill slots \[1, 2, 7\]"),
        (_set(["inputs", 0, "dtype"], "float16"), r"inputs\[0\] \('temp c'\)\.dtype must be one of float32, float64, int64, string, got 'float16'"),
        (_set(["inputs", 1, "name"], "temp c"), "feature names must be unique; repeated: temp c"),
        (_set(["inputs", 3, "kind"], "numeric"), "is a string feature, so its kind must be 'categorical'"),
        (_set(["inputs", 0, "range"], [5, 1]), r"inputs\[0\] \('temp c'\)\.range must be \[min, max\]"),
        (_set(["onnx_inputs", 0, "name"], "floats"), "onnx input 'floats' has width 3 but its features fill slots"),
        (_set(["onnx_inputs", 0, "width"], 4), "has width 4 but its features fill slots"),
        (_set(["onnx_inputs", 1, "dtype"], "float32"), "are carried by float32 input 'string_input' but declare another dtype"),
        (_set(["outputs", "probabilities"], "probs"), "outputs.probabilities must name an output of model.onnx"),
        (_set(["outputs", "label_values"], [0]), "label_values must give one label tensor value per class"),
        (_set(["outputs", "task"], "ranking"), "outputs.task must be 'classification' or 'regression'"),
        (_set(["model", "version"], 3), "'model' must be an object with string 'name' and 'version'"),
    ],
)
def test_manifest_that_does_not_match_the_model(tmp_path: Path, fire: builder.Built, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = builder.rewrite(fire.path, tmp_path / "x.edgepkg", edit=edit)
    with pytest.raises(BundleError, match=message) as info:
        runtime.load(path)
    assert info.value.entry == "manifest.json"


def test_self_test_catches_wrong_probabilities(tmp_path: Path, fire: builder.Built) -> None:
    def change(golden: dict) -> None:
        golden["outputs"]["probabilities"][3] = [p + 0.01 for p in golden["outputs"]["probabilities"][3]]

    path = builder.edit_golden(fire.path, tmp_path / "x.edgepkg", change)
    with pytest.raises(SelfTestError, match=r"golden.json: golden row 3: probability of class 0 is .* \(tolerance abs 0.0001, rel 0.0001\); 1 of 20 rows differ"):
        runtime.load(path)


def test_self_test_catches_wrong_labels(tmp_path: Path, fire: builder.Built) -> None:
    def change(golden: dict) -> None:
        golden["outputs"]["label"][5] = 1 - golden["outputs"]["label"][5]

    path = builder.edit_golden(fire.path, tmp_path / "x.edgepkg", change)
    with pytest.raises(SelfTestError, match="golden row 5: label is"):
        runtime.load(path)


def test_self_test_respects_tolerance(tmp_path: Path, fire: builder.Built) -> None:
    def change(golden: dict) -> None:
        golden["outputs"]["probabilities"][0] = [p + 5e-5 for p in golden["outputs"]["probabilities"][0]]

    # Within abs 1e-4: loads.
    runtime.load(builder.edit_golden(fire.path, tmp_path / "ok.edgepkg", change))


def test_self_test_regression(tmp_path: Path, burn: builder.Built) -> None:
    def change(golden: dict) -> None:
        golden["outputs"]["prediction"][2] += 1.0

    with pytest.raises(SelfTestError, match="golden row 2: prediction is"):
        runtime.load(builder.edit_golden(burn.path, tmp_path / "x.edgepkg", change))


def test_self_test_golden_inputs_that_do_not_fit(tmp_path: Path, fire: builder.Built) -> None:
    def change(golden: dict) -> None:
        del golden["inputs"]["region"]

    with pytest.raises(SelfTestError, match="golden rows cannot be predicted: missing feature\\(s\\) 'region'"):
        runtime.load(builder.edit_golden(fire.path, tmp_path / "x.edgepkg", change))


def test_golden_not_json(tmp_path: Path, fire: builder.Built) -> None:
    path = builder.rewrite(fire.path, tmp_path / "x.edgepkg", files={"golden.json": b"{nope"})
    with pytest.raises(SelfTestError, match="golden.json: not valid JSON"):
        runtime.load(path)


def test_read_bundle_keeps_exact_manifest_bytes(fire: builder.Built) -> None:
    bundle = read_bundle(fire.path)
    assert json.loads(bundle.manifest_bytes) == bundle.manifest
    assert np.isclose(bundle.size, fire.path.stat().st_size)


@pytest.mark.parametrize("bundle", ["fire", "levels"])
def test_label_values_that_the_model_never_returns(tmp_path: Path, bundle: str, request: pytest.FixtureRequest) -> None:
    built = request.getfixturevalue(bundle)

    def relabel(manifest: dict) -> None:
        values = manifest["outputs"]["label_values"]
        values[1] = 7 if isinstance(values[1], int) else "something-else"

    with pytest.raises(SelfTestError, match="golden rows cannot be predicted: model.onnx returned label .*, which is not one of the manifest's label_values"):
        runtime.load(builder.rewrite(built.path, tmp_path / "x.edgepkg", edit=relabel))


@pytest.mark.parametrize("signature", [b"", b"short", b"\x00" * 64, b"\xff" * 200])
def test_malformed_signature_bytes(tmp_path: Path, fire_bytes: bytes, keys: tuple[Path, Path], signature: bytes) -> None:
    path = _write(tmp_path, builder.rezip(fire_bytes, replace={"manifest.sig": signature}))
    with pytest.raises(SignatureError, match="manifest.sig: signature does not match"):
        runtime.load(path, public_key=keys[1])


def test_golden_without_tolerance_uses_the_parity_tolerance(tmp_path: Path, fire: builder.Built) -> None:
    def change(golden: dict) -> None:
        del golden["tolerance"]
        golden["outputs"]["probabilities"][0] = [p + 5e-3 for p in golden["outputs"]["probabilities"][0]]

    path = builder.edit_golden(fire.path, tmp_path / "x.edgepkg", change)
    with pytest.raises(SelfTestError, match=r"golden row 0: .*\(tolerance abs 0.0001, rel 0.0001\)"):
        runtime.load(path)
    loose = builder.rewrite(path, tmp_path / "loose.edgepkg", edit=lambda m: m["parity"].update(tolerance={"abs": 1e-2, "rel": 0}))
    assert runtime.load(loose).golden_rows == 20
    no_tolerance = builder.rewrite(path, tmp_path / "none.edgepkg", edit=lambda m: m.pop("parity"))
    with pytest.raises(SelfTestError, match="'tolerance' must be"):
        runtime.load(no_tolerance)


def test_directory_instead_of_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read bundle .*: Is a directory"):
        runtime.load(tmp_path)
