"""A bundle built with --with-deps installs and predicts in a clean venv with no index at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .support import (
    HEAVY,
    HEAVY_DISTRIBUTIONS,
    ROOT,
    DepsBundle,
    assert_same_predictions,
    host_predictions,
    parse_json_lines,
)

INSTALLER = ROOT / "docker" / "install_from_bundle.py"
# Any attempt to reach an index fails at once: the install must need none.
OFFLINE_ENV = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    return {**env, **OFFLINE_ENV}


@pytest.fixture(scope="module")
def device_venv(deps_bundle: DepsBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (its own pip, nothing else) with edgepack installed from the bundle only."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), str(INSTALLER), str(deps_bundle.path), "--python", str(python), "--public-key", str(deps_bundle.public_key)],
        capture_output=True, text=True, env=_env(), cwd=venv.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed edgepack for {deps_bundle.platform}" in done.stderr
    return venv


def test_offline_venv_predicts_like_the_host(device_venv: Path, deps_bundle: DepsBundle, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in deps_bundle.rows))
    done = subprocess.run(
        [str(device_venv / "bin" / "edgepack"), "predict", str(deps_bundle.path), "--input", str(rows),
         "--public-key", str(deps_bundle.public_key)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = parse_json_lines(done.stdout)
    assert [line["row"] for line in got] == list(range(1, len(deps_bundle.rows) + 1))
    assert_same_predictions(got, host_predictions(deps_bundle.path, deps_bundle.rows, deps_bundle.public_key))


def test_offline_venv_holds_no_build_side_packages(device_venv: Path) -> None:
    probe = (
        "import importlib.util, json, importlib.metadata as m\n"
        f"mods = [n for n in {HEAVY!r} if importlib.util.find_spec(n)]\n"
        "dists = sorted(d.metadata['Name'].lower() for d in m.distributions())\n"
        "print(json.dumps({'mods': mods, 'dists': dists}))\n"
    )
    done = subprocess.run([str(device_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=_env(), cwd=device_venv)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["mods"] == []
    assert not set(found["dists"]) & set(HEAVY_DISTRIBUTIONS)
    assert {"edgepack", "onnxruntime", "numpy", "httpx", "cryptography", "sqlite-utils"} <= set(found["dists"])


def test_offline_venv_verifies_the_signed_bundle(device_venv: Path, deps_bundle: DepsBundle) -> None:
    done = subprocess.run(
        [str(device_venv / "bin" / "edgepack"), "verify", str(deps_bundle.path), "--public-key", str(deps_bundle.public_key)],
        capture_output=True, text=True, env=_env(), cwd=device_venv,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "signature verified" in done.stdout


def _rewrite(src: Path, dst: Path, victim_part: str, change) -> str:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        victim = next(i.filename for i in zin.infolist() if victim_part in i.filename)
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, change(data) if info.filename == victim else data)
    return victim


def test_installer_refuses_a_tampered_wheel_before_pip_sees_it(deps_bundle: DepsBundle, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.edgepkg"
    victim = _rewrite(deps_bundle.path, tampered, "/edgepack-", lambda data: data[:-1] + bytes([data[-1] ^ 1]))
    target = tmp_path / "never-used-python"
    done = subprocess.run(
        [sys.executable, str(INSTALLER), str(tampered), "--python", str(target), "--public-key", str(deps_bundle.public_key)],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert victim in done.stderr and "does not match the manifest" in done.stderr


def test_installer_names_the_platforms_a_bundle_has(deps_bundle: DepsBundle) -> None:
    done = subprocess.run(
        [sys.executable, str(INSTALLER), str(deps_bundle.path), "--platform", "musllinux_1_2_aarch64", "--python", sys.executable,
         "--public-key", str(deps_bundle.public_key)],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "musllinux_1_2_aarch64" in done.stderr and deps_bundle.platform in done.stderr


def test_installer_refuses_a_bundle_without_wheels(make_bundle, tmp_path: Path) -> None:
    plain = make_bundle("binary").path
    done = subprocess.run(
        [sys.executable, str(INSTALLER), str(plain), "--python", sys.executable, "--allow-unsigned"], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 2
    assert "--with-deps" in done.stderr


def _installer_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_from_bundle", INSTALLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installer_picks_the_platform_of_this_machine_among_several(monkeypatch: pytest.MonkeyPatch) -> None:
    installer = _installer_module()
    both = ["manylinux_2_28_x86_64", "manylinux_2_28_aarch64"]
    monkeypatch.setattr(installer.host_platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(installer.host_platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert installer.choose_platform(both, None) == "manylinux_2_28_aarch64"
    monkeypatch.setattr(installer.host_platform, "machine", lambda: "x86_64")
    assert installer.choose_platform(both, None) == "manylinux_2_28_x86_64"
    assert installer.choose_platform(both, "manylinux_2_28_aarch64") == "manylinux_2_28_aarch64"
    monkeypatch.setattr(installer.host_platform, "machine", lambda: "armv7l")
    with pytest.raises(installer.InstallError, match="pass --platform"):
        installer.choose_platform(both, None)
