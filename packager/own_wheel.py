"""edgepack's own wheel, the one every device installs first.

From a source checkout it is built (``pip wheel --no-deps`` on a staged copy, cached by the
digest of what it contains); from an installed edgepack it is rebuilt from the installed
files. The wheel is pure Python, so one serves every platform.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from .errors import WheelError
from .options import WheelOptions, default_wheel_cache

DIST_NAME = "edgepack"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Top-level files a wheel build may read (metadata, readme, license); nothing else is staged.
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README*", "LICENSE*", "NOTICE*", "COPYING*")
# Installer-owned files a reconstructed wheel must not carry (PEP 376 / PEP 610 / PEP 627).
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def source_tree() -> Path | None:
    """The edgepack source checkout this process runs from, if it runs from one."""
    import edgepack

    root = Path(edgepack.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == DIST_NAME else None


def edgepack_wheel(out_dir: Path, *, options: WheelOptions = WheelOptions()) -> Path:
    """Produce the edgepack wheel the device installs, in ``out_dir``.

    From a source tree it is built with ``pip wheel --no-deps``; when edgepack was
    installed from a wheel (no source tree), that wheel is rebuilt from the installed
    files. The wheel is pure Python, so one serves every platform.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.edgepack_wheel is not None:
        given = Path(options.edgepack_wheel)
        if not given.is_file() or not given.name.endswith(".whl"):
            raise WheelError(f"edgepack wheel {str(given)!r} is not a .whl file", package=DIST_NAME)
        target = out_dir / given.name
        shutil.copyfile(given, target)
        return target
    root = source_tree()
    if root is not None:
        return _build_from_source(root, out_dir, options)
    return rebuild_installed_wheel(out_dir)


def _build_from_source(root: Path, out_dir: Path, options: WheelOptions) -> Path:
    # Build from a copy holding only what the wheel needs: pip builds in place, and its
    # build/ and *.egg-info litter (and races) in a working tree are not ours to make.
    staging = out_dir / "src"
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", ["*"])
    staging.mkdir()
    for entry in sorted(root.iterdir()):
        if entry.is_file() and any(fnmatch.fnmatch(entry.name, p) for p in _PROJECT_FILES):
            shutil.copy2(entry, staging / entry.name)
        elif entry.is_dir() and (entry / "__init__.py").is_file() and any(fnmatch.fnmatch(entry.name, p) for p in patterns):
            shutil.copytree(entry, staging / entry.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    # The same source gives the same wheel: reuse it, which also keeps repeated builds
    # offline (an isolated build fetches setuptools from the index).
    digest = hashlib.sha256()
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        digest.update(path.relative_to(staging).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    cached_dir = (options.cache_dir or default_wheel_cache()) / "edgepack-builds" / digest.hexdigest()
    cached = sorted(cached_dir.glob("edgepack-*.whl"))
    if len(cached) == 1:
        target = out_dir / cached[0].name
        shutil.copyfile(cached[0], target)
        return target

    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # fixed zip times: same source, same wheel
    args = [*options.pip, "wheel", "--no-deps", "--disable-pip-version-check", "--no-input", "--wheel-dir", str(out_dir), str(staging)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=options.timeout, env=env, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise WheelError(f"cannot build the edgepack wheel from {root}: {exc}", package=DIST_NAME) from exc
    built = sorted(out_dir.glob("edgepack-*.whl"))
    if done.returncode != 0 or len(built) != 1:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise WheelError(f"building the edgepack wheel from {root} failed:\n{tail}", package=DIST_NAME)
    cached_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=cached_dir.parent, prefix=".partial-"))
    shutil.copyfile(built[0], partial / built[0].name)
    try:
        partial.rename(cached_dir)
    except OSError:  # another build stored the same wheel first
        shutil.rmtree(partial, ignore_errors=True)
    return built[0]


def rebuild_installed_wheel(out_dir: Path, dist_name: str = DIST_NAME) -> Path:
    """Rebuild the wheel of an installed pure-Python distribution from its installed files.

    Installing a pure wheel copies its files verbatim and adds only installer records
    (INSTALLER, REQUESTED, direct_url.json, a rewritten RECORD) and console scripts
    outside site-packages; dropping those and writing a fresh RECORD gives back a wheel
    that installs the same files.
    """
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise WheelError(f"{dist_name} is not installed, so there is no wheel to rebuild", package=dist_name) from exc
    wheel_meta = dist.read_text("WHEEL")
    direct_url = dist.read_text("direct_url.json") or ""
    if wheel_meta is None or '"editable": true' in direct_url.replace(" ", "").replace('":true', '": true'):
        raise WheelError(
            f"{dist_name} is a development (editable or egg-info) install and its source tree was not found, "
            "so there is no wheel to ship; run from the source tree, or pass an edgepack wheel "
            "(WheelOptions.edgepack_wheel)",
            package=dist_name,
        )
    if "Root-Is-Purelib: true" not in wheel_meta:
        raise WheelError(f"{dist_name} is not a pure-Python install; cannot rebuild its wheel", package=dist_name)
    files = dist.files
    if not files:
        raise WheelError(f"{dist_name} was installed without a RECORD; cannot rebuild its wheel", package=dist_name)
    info_dir = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info_dir is None:
        raise WheelError(f"{dist_name} has no .dist-info directory; cannot rebuild its wheel", package=dist_name)
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    if len(tags) != 1:
        raise WheelError(f"{dist_name} WHEEL metadata has tags {tags}; expected exactly one", package=dist_name)

    entries: dict[str, bytes] = {}
    for item in files:
        parts = item.parts
        if parts[0] == ".." or "__pycache__" in parts or item.suffix == ".pyc":
            continue
        if parts[0] == info_dir and len(parts) == 2 and parts[1] in _INSTALLER_FILES:
            continue
        entries[item.as_posix()] = Path(item.locate()).read_bytes()
    record_name = f"{info_dir}/RECORD"
    record = "".join(f"{name},sha256={_record_hash(data)},{len(data)}\n" for name, data in sorted(entries.items()))
    record += f"{record_name},,\n"
    entries[record_name] = record.encode()

    version = dist.version
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    target = out_dir / f"{name}-{version}-{tags[0]}.whl"
    with zipfile.ZipFile(target, "w") as zf:
        for entry_name, data in sorted(entries.items(), key=lambda kv: (kv[0] == record_name, kv[0])):
            info = zipfile.ZipInfo(entry_name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, data)
    return target


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

