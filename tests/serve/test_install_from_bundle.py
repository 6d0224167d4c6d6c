"""docker/install_from_bundle.py installs no code from a bundle before its signature holds.

Fast (no buildah, no real wheels): a signed bundle with a stand-in wheel, and the attack
of the review, a manifest rewritten to add an ``edgepack-9.9.9`` wheel while the old,
now invalid, signature is kept. The pure-Python Ed25519 verification (for base images
whose interpreter has no ``cryptography``) is checked against ``cryptography``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.runtime import builder

from .support import ROOT

INSTALLER = ROOT / "docker" / "install_from_bundle.py"
PLATFORM = "manylinux_2_28_x86_64"


def _installer():
    spec = importlib.util.spec_from_file_location("install_from_bundle", INSTALLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(name: str, version: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{name}/__init__.py", "raise SystemExit('attacker code ran')\n" if version == "9.9.9" else "")
    return out.getvalue()


@pytest.fixture
def signed_with_wheel(fire_v1, keys, tmp_path: Path) -> Path:
    wheel = f"wheels/{PLATFORM}/edgepack-0.1.0-py3-none-any.whl"
    return builder.rewrite(fire_v1.path, tmp_path / "signed.edgepkg", files={wheel: _wheel("edgepack", "0.1.0")}, signing_key=keys[0])


def _forge(source: Path, target: Path) -> Path:
    """The review's attack: add a wheel to the manifest (hashes consistent), keep the old signature."""
    import hashlib

    evil = _wheel("edgepack", "9.9.9")
    name = f"wheels/{PLATFORM}/edgepack-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        manifest = json.loads(zin.read("manifest.json"))
        for old in [n for n in manifest["files"] if n.startswith("wheels/")]:
            del manifest["files"][old]
        manifest["files"][name] = {"sha256": hashlib.sha256(evil).hexdigest(), "size": len(evil)}
        for info in zin.infolist():
            if info.filename.startswith("wheels/"):
                continue
            data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode() if info.filename == "manifest.json" else zin.read(info)
            zout.writestr(info, data)
        zout.writestr(name, evil)
    return target


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"
    return subprocess.run([sys.executable, str(INSTALLER), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_a_forged_bundle_is_refused_before_pip_runs(signed_with_wheel: Path, keys, tmp_path: Path) -> None:
    forged = _forge(signed_with_wheel, tmp_path / "forged.edgepkg")
    marker = tmp_path / "pip-ran"
    # The interpreter pip would run as: if the installer ever got that far, the marker appears.
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    fake_python.chmod(0o755)
    done = _run(forged, "--platform", PLATFORM, "--python", fake_python, "--public-key", keys[1])
    assert done.returncode == 2, done.stderr
    assert "manifest.sig does not verify manifest.json" in done.stderr
    assert not marker.exists()
    # The genuine bundle passes the same check and reaches pip (the stand-in interpreter).
    done = _run(signed_with_wheel, "--platform", PLATFORM, "--python", fake_python, "--public-key", keys[1])
    assert done.returncode == 0, done.stderr
    assert marker.exists() and "signature verified" in done.stderr


def test_the_installer_needs_a_key_and_refuses_unsigned_bundles_with_one(fire_v1, keys, tmp_path: Path) -> None:
    done = _run(fire_v1.path, "--python", sys.executable)
    assert done.returncode == 2 and "--public-key" in done.stderr
    unsigned = builder.rewrite(fire_v1.path, tmp_path / "unsigned.edgepkg")
    done = _run(unsigned, "--python", sys.executable, "--public-key", keys[1])
    assert done.returncode == 2 and "not signed" in done.stderr


def test_a_bundle_signed_with_another_key_is_refused(signed_with_wheel: Path, other_key_pair, tmp_path: Path) -> None:
    done = _run(signed_with_wheel, "--platform", PLATFORM, "--python", tmp_path / "never", "--public-key", other_key_pair[1])
    assert done.returncode == 2 and "does not verify" in done.stderr


def test_the_pure_python_ed25519_agrees_with_cryptography() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    installer = _installer()
    for size in (0, 1, 64, 1000, 5000):
        key = Ed25519PrivateKey.generate()
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        public = installer.public_key_bytes(pem)
        message = os.urandom(size)
        signature = key.sign(message)
        assert installer.ed25519_verify_rfc8032(public, message, signature)
        assert not installer.ed25519_verify_rfc8032(public, message + b"!", signature)
        for flip in (0, 31, 32, 63):
            bad = bytearray(signature)
            bad[flip] ^= 0x10
            assert not installer.ed25519_verify_rfc8032(public, message, bytes(bad))
        other = installer.public_key_bytes(
            Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        assert not installer.ed25519_verify_rfc8032(other, message, signature)
    # s >= L (a malleable signature) is refused, as RFC 8032 requires.
    assert not installer.ed25519_verify_rfc8032(public, message, signature[:32] + (2**253).to_bytes(32, "little"))
    with pytest.raises(installer.InstallError, match="not a PEM public key"):
        installer.public_key_bytes(b"hello")


def test_without_cryptography_the_installer_still_verifies(signed_with_wheel: Path, keys, tmp_path: Path, monkeypatch) -> None:
    installer = _installer()
    monkeypatch.setitem(sys.modules, "cryptography", None)  # what a slim base image's python has
    monkeypatch.setitem(sys.modules, "cryptography.exceptions", None)
    pem = Path(keys[1]).read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    chosen, written, _ = installer.extract_wheels(signed_with_wheel, PLATFORM, out, pem)
    assert chosen == PLATFORM and [w.name for w in written] == ["edgepack-0.1.0-py3-none-any.whl"]
    forged = _forge(signed_with_wheel, tmp_path / "forged.edgepkg")
    with pytest.raises(installer.InstallError, match="does not verify"):
        installer.extract_wheels(forged, PLATFORM, tmp_path / "never", pem)
