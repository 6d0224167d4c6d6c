"""Install edgepack offline from the wheels inside an .edgepkg bundle.

Standard library only: it runs where edgepack is not installed yet (a fresh device, the
first stage of Dockerfile.edge). Each wheel is checked against the sha256 and size the
bundle's manifest lists before pip sees it, then pip installs with ``--no-index``, so
nothing is fetched from a network. The manifest's own signature is checked afterwards by
``edgepack verify --public-key`` (Ed25519 needs ``cryptography``, one of those wheels).

    python3 install_from_bundle.py model.edgepkg [--platform manylinux_2_28_x86_64] [--python VENV/bin/python]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform as host_platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

WHEELS = "wheels"


class InstallError(Exception):
    """The bundle has no usable wheels for this device."""


def bundle_platforms(manifest: dict) -> dict[str, list[str]]:
    """``{platform: [wheel entry names]}`` from the manifest's ``files`` table."""
    found: dict[str, list[str]] = {}
    for name in manifest.get("files", {}):
        parts = PurePosixPath(name).parts
        if len(parts) == 3 and parts[0] == WHEELS and parts[2].endswith(".whl"):
            found.setdefault(parts[1], []).append(name)
    return found


def choose_platform(available: list[str], wanted: str | None) -> str:
    if not available:
        raise InstallError("the bundle holds no wheels; rebuild it with `edgepack build ... --with-deps PLATFORM`")
    if wanted:
        if wanted not in available:
            raise InstallError(f"the bundle has no wheels for platform {wanted!r}; it has: {', '.join(sorted(available))}")
        return wanted
    arch = host_platform.machine().lower()
    libc = "musllinux" if host_platform.libc_ver()[0] != "glibc" else "manylinux"
    matching = [p for p in available if p.endswith("_" + arch) and p.startswith(libc)]
    if len(matching) == 1:
        return matching[0]
    raise InstallError(
        f"cannot tell which of the bundle's platforms ({', '.join(sorted(available))}) fits this "
        f"{libc} {arch} device; pass --platform"
    )


def extract_wheels(bundle: Path, platform: str | None, dest: Path) -> tuple[str, list[Path], bytes]:
    """Write the chosen platform's wheels to ``dest`` after checking each against the manifest."""
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        files = manifest.get("files", {})
        platforms = bundle_platforms(manifest)
        chosen = choose_platform(list(platforms), platform)
        written = []
        for name in sorted(platforms[chosen]):
            data = zf.read(name)
            expect = files[name]
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != expect.get("size") or digest != expect.get("sha256"):
                raise InstallError(f"{name}: sha256 {digest} / {len(data)} bytes does not match the manifest; the bundle was altered")
            target = dest / PurePosixPath(name).name
            target.write_bytes(data)
            written.append(target)
        requirements = zf.read("requirements.txt") if "requirements.txt" in files else b""
        if requirements and hashlib.sha256(requirements).hexdigest() != files["requirements.txt"].get("sha256"):
            raise InstallError("requirements.txt does not match the manifest; the bundle was altered")
    return chosen, written, requirements


def install(bundle: Path, *, platform: str | None, python: str) -> str:
    with tempfile.TemporaryDirectory(prefix="edgepack-wheels-") as tmp:
        work = Path(tmp)
        chosen, _, requirements = extract_wheels(bundle, platform, work)
        constraints = work / "constraints.txt"
        constraints.write_bytes(requirements)
        subprocess.run(
            [python, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", str(work), "--constraint", str(constraints), "edgepack"],
            check=True,
        )  # fmt: skip
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the .edgepkg built with --with-deps")
    parser.add_argument("--platform", default=None, help="the wheels/<platform> to install (default: the one that fits this device)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (of a venv) to install into")
    args = parser.parse_args(argv)
    try:
        chosen = install(args.bundle, platform=args.platform or None, python=args.python)
    except (InstallError, OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        print(f"install_from_bundle: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"install_from_bundle: pip failed with exit code {exc.returncode}", file=sys.stderr)
        return 3
    print(f"install_from_bundle: installed edgepack for {chosen} from {args.bundle}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
