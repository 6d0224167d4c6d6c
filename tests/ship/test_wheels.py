"""Device wheels: what ``device_wheels`` gathers, how it fails, and how bundles carry them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from packager import own_wheel, wheels
from packager.errors import PackagerError
from packager.errors import WheelError
from packager.options import WheelOptions
from packager.wheels import device_wheels, platform_tags
from runtime.bundle import read_bundle

from .support import host_platform, running_python


def _only_a_dead_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip sees one index, refusing connections, and none of this machine's pip config."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)


def _names(files: dict[str, bytes], platform: str) -> set[str]:
    prefix = f"wheels/{platform}/"
    return {canonicalize_name(parse_wheel_filename(name[len(prefix):])[0]) for name in files if name.startswith(prefix)}


def test_manylinux_platform_accepts_older_glibc_tags_like_a_device_pip() -> None:
    tags = platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags  # a newer glibc than the device has
    assert platform_tags("manylinux2014_aarch64")[0] == "manylinux_2_17_aarch64"
    assert "manylinux_2_28_aarch64" not in platform_tags("manylinux2014_aarch64")
    assert platform_tags("linux_armv7l") == ["linux_armv7l"]


@pytest.mark.parametrize("bad", ["", "Manylinux_2_28_x86_64", "linux x86_64", "../x86_64", "wheels/x"])
def test_malformed_platform_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(WheelError, match="not a wheel platform tag") as info:
        device_wheels([bad], "3.11", ["onnxruntime"])
    assert info.value.platform == bad


@pytest.mark.parametrize(("given", "expected"), [("3.11", ("3.11", "cp311")), ("3.12.4", ("3.12", "cp312")), ("310", ("3.10", "cp310"))])
def test_python_version_forms(given: str, expected: tuple[str, str]) -> None:
    assert wheels.normalize_python_version(given) == expected


def test_bad_python_version_and_requirement_are_named() -> None:
    with pytest.raises(WheelError, match="'three'"):
        device_wheels([host_platform()], "three", [])
    with pytest.raises(WheelError, match="'onnxruntime=>1'"):
        device_wheels([host_platform()], "3.11", ["onnxruntime=>1"])
    with pytest.raises(WheelError, match="given twice"):
        device_wheels([host_platform(), host_platform()], "3.11", [])


def test_wheel_error_belongs_to_the_packager_tree() -> None:
    assert issubclass(WheelError, PackagerError)


@pytest.fixture(scope="module")
def gathered(wheel_cache: Path) -> dict[str, bytes]:
    version = metadata.version("onnxruntime")
    return device_wheels([host_platform()], running_python(), [f"onnxruntime=={version}", "numpy>=1.24,<3", "# parity ran here", ""], options=WheelOptions(cache_dir=wheel_cache))


def test_device_wheels_hold_edgepack_and_its_base_requirements_pinned_to_installed_versions(gathered: dict[str, bytes]) -> None:
    platform = host_platform()
    assert all(name.startswith(f"wheels/{platform}/") and name.endswith(".whl") for name in gathered)
    names = _names(gathered, platform)
    for required in ("edgepack", "onnxruntime", "numpy", "httpx", "sqlite-utils", "cryptography", "click"):
        assert required in names
    assert not names & {"mlflow", "scikit-learn", "skl2onnx", "onnx", "pandas", "pyarrow", "protobuf-7"}
    for name in gathered:
        dist, version, *_ = parse_wheel_filename(name.rsplit("/", 1)[1])
        if canonicalize_name(dist) in ("onnxruntime", "numpy", "httpx", "cryptography"):
            assert str(version) == metadata.version(str(dist)), f"{dist} {version} is not the version parity ran with"
    for data in gathered.values():
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None


def test_edgepack_wheel_is_the_base_install_without_extras(gathered: dict[str, bytes]) -> None:
    own = next(data for name, data in gathered.items() if "/edgepack-" in name)
    with zipfile.ZipFile(io.BytesIO(own)) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
        listed = set(zf.namelist())
    base = [r for r in requires if "extra ==" not in r]
    assert {r.split()[1].split(">")[0].split("=")[0].lower() for r in base} >= {"onnxruntime", "numpy", "httpx", "cryptography"}
    assert "runtime/bundle.py" in listed and "telemetry/__init__.py" in listed
    assert not any(n.startswith("tests/") for n in listed)


def test_gathering_twice_gives_the_same_bytes_offline_from_the_cache(
    gathered: dict[str, bytes], wheel_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The same edgepack wheel both times: this is about the dependencies, and a working
    # tree being edited meanwhile would (rightly) give a different edgepack wheel.
    own_name, own = next((name, data) for name, data in gathered.items() if "/edgepack-" in name)
    own_path = tmp_path / own_name.rsplit("/", 1)[1]
    own_path.write_bytes(own)
    # A dead index and no other source prove the second run needs none: all from the cache.
    _only_a_dead_index(monkeypatch)
    version = metadata.version("onnxruntime")
    options = WheelOptions(cache_dir=wheel_cache, edgepack_wheel=own_path)
    again = device_wheels([host_platform()], running_python(), [f"onnxruntime=={version}"], options=options)
    assert again.keys() == gathered.keys()
    assert [name for name in gathered if again[name] != gathered[name]] == []


def test_platform_without_onnxruntime_wheels_fails_naming_package_and_platform(wheel_cache: Path) -> None:
    version = metadata.version("onnxruntime")
    with pytest.raises(WheelError) as info:
        device_wheels(["linux_armv7l"], running_python(), [f"onnxruntime=={version}"], options=WheelOptions(cache_dir=wheel_cache))
    assert info.value.package == "onnxruntime"
    assert info.value.platform == "linux_armv7l"
    assert "onnxruntime" in str(info.value) and "linux_armv7l" in str(info.value)


def test_rebuilt_wheel_of_an_installed_distribution_installs_the_same_files(gathered: dict[str, bytes], tmp_path: Path) -> None:
    # click was installed from a wheel; the copy the device gets is in `gathered`.
    original = next(data for name, data in gathered.items() if f"/click-{metadata.version('click')}-" in name)
    rebuilt = own_wheel.rebuild_installed_wheel(tmp_path, "click")
    assert rebuilt.name == f"click-{metadata.version('click')}-py3-none-any.whl"
    with zipfile.ZipFile(io.BytesIO(original)) as zo, zipfile.ZipFile(rebuilt) as zr:
        skip = {n for n in zo.namelist() if n.endswith("/RECORD")}
        assert set(zr.namelist()) - skip == set(zo.namelist()) - skip
        for name in set(zo.namelist()) - skip:
            assert zr.read(name) == zo.read(name), name
        record = zr.read(next(n for n in zr.namelist() if n.endswith("/RECORD"))).decode()
    for line in record.splitlines():
        entry, digest, size = line.rsplit(",", 2)
        if digest:
            data = zipfile.ZipFile(rebuilt).read(entry)
            assert digest == "sha256=" + own_wheel._record_hash(data) and int(size) == len(data)


def test_edgepack_wheel_without_a_source_tree_from_an_editable_install_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(own_wheel, "source_tree", lambda: None)
    with pytest.raises(WheelError, match="development .editable or egg-info. install") as info:
        own_wheel.edgepack_wheel(tmp_path)
    assert info.value.package == "edgepack"


def test_given_edgepack_wheel_is_used_as_is(tmp_path: Path) -> None:
    fake = tmp_path / "edgepack-9.9.9-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    got = own_wheel.edgepack_wheel(tmp_path / "out", options=WheelOptions(edgepack_wheel=fake))
    assert got.read_bytes() == fake.read_bytes()
    with pytest.raises(WheelError, match="not a .whl file"):
        own_wheel.edgepack_wheel(tmp_path / "out2", options=WheelOptions(edgepack_wheel=tmp_path / "missing.whl"))


# -- through build_bundle -------------------------------------------------------------------


def test_bundle_wheels_are_covered_by_manifest_hashes(deps_bundle) -> None:
    bundle = read_bundle(deps_bundle.path, public_key=deps_bundle.public_key)
    listed = {name: entry for name, entry in bundle.manifest["files"].items() if name.startswith("wheels/")}
    assert listed, "the bundle lists no wheels"
    assert all(name.startswith(f"wheels/{deps_bundle.platform}/") for name in listed)
    assert _names(dict(bundle.files), deps_bundle.platform) >= {"edgepack", "onnxruntime", "numpy"}
    for name, entry in listed.items():
        assert entry == {"sha256": hashlib.sha256(bundle.files[name]).hexdigest(), "size": len(bundle.files[name])}


def test_bundle_requirements_pin_the_onnxruntime_that_passed_parity(deps_bundle) -> None:
    bundle = read_bundle(deps_bundle.path)
    requirements = bundle.files["requirements.txt"].decode()
    parity_ort = bundle.manifest["parity"]["onnxruntime"]
    assert f"onnxruntime=={parity_ort}" in requirements.splitlines()
    shipped = [n for n in bundle.files if n.startswith(f"wheels/{deps_bundle.platform}/onnxruntime-")]
    assert len(shipped) == 1 and f"onnxruntime-{parity_ort}-" in shipped[0]


def test_tampered_wheel_is_rejected_by_the_loader(deps_bundle, tmp_path: Path) -> None:
    from runtime.errors import BundleError

    tampered = tmp_path / "tampered.edgepkg"
    with zipfile.ZipFile(deps_bundle.path) as src, zipfile.ZipFile(tampered, "w") as dst:
        victim = next(i.filename for i in src.infolist() if i.filename.startswith("wheels/") and "/numpy-" in i.filename)
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b"\0" if info.filename == victim else data)
    with pytest.raises(BundleError) as info:
        read_bundle(tampered)
    assert info.value.entry == victim
    manifest = json.loads(zipfile.ZipFile(tampered).read("manifest.json"))
    assert victim in manifest["files"]



def test_edgepack_build_for_32_bit_arm_fails_naming_onnxruntime_and_writes_nothing(make_bundle, wheel_cache: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgepack.cli import cli

    base = make_bundle("binary")
    out = tmp_path / "dist" / "armv7.edgepkg"
    result = CliRunner().invoke(
        cli,
        ["build", "models:/fire-risk@champion", "-o", str(out), "--tracking-uri", base.tracking_uri,
         "--with-deps", host_platform(), "--with-deps", "linux_armv7l"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "onnxruntime" in result.stderr and "linux_armv7l" in result.stderr
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_arm64_wheels_carry_only_tags_an_arm64_device_accepts(wheel_cache: Path) -> None:
    version = metadata.version("onnxruntime")
    platform = "manylinux_2_28_aarch64"
    got = device_wheels([platform], running_python(), [f"onnxruntime=={version}"], options=WheelOptions(cache_dir=wheel_cache))
    accepted = set(platform_tags(platform)) | {"any"}
    assert {"onnxruntime", "numpy", "cryptography", "edgepack"} <= _names(got, platform)
    for name in got:
        _, _, _, tags = parse_wheel_filename(name.rsplit("/", 1)[1])
        assert {tag.platform for tag in tags} & accepted, f"{name} does not install on {platform}"
        abi = "cp" + running_python().replace(".", "")
        assert {tag.abi for tag in tags} & {"none", "abi3", abi}, f"{name} does not load in CPython {running_python()}"


def test_unreachable_index_is_reported_as_such_not_as_a_missing_wheel(
    gathered: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own_name, own = next((name, data) for name, data in gathered.items() if "/edgepack-" in name)
    own_path = tmp_path / own_name.rsplit("/", 1)[1]
    own_path.write_bytes(own)
    _only_a_dead_index(monkeypatch)
    monkeypatch.setenv("PIP_RETRIES", "1")  # one quick retry, and pip's warning names the connection error
    options = WheelOptions(cache_dir=tmp_path / "empty-cache", edgepack_wheel=own_path)
    with pytest.raises(WheelError, match="package index is unreachable") as info:
        device_wheels([host_platform()], running_python(), ["onnxruntime"], options=options)
    assert info.value.platform == host_platform()
