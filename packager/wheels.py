"""Device wheels: everything a device needs to install edgepack offline from its bundle.

``device_wheels`` returns, per target platform, edgepack's own wheel plus every wheel its
base (device) requirements resolve to for that platform and Python version, as bundle
entries ``wheels/<platform>/<file>.whl``. pip does the resolving (``pip download
--only-binary=:all: --platform ...``), so the result is what ``pip install --no-index
--find-links wheels/<platform> edgepack`` will accept on the device.

Versions are pinned to the ones installed here, where the parity gate ran, unless the
caller's requirements pin them already; together with a local download cache this makes
two builds of the same model give the same wheels, and repeated builds work offline.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import PackagerError

DIST_NAME = "edgepack"
WHEELS_PREFIX = "wheels/"

_PLATFORM_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_MANYLINUX_RE = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_MUSLLINUX_RE = re.compile(r"^musllinux_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_NO_MATCH_RE = re.compile(r"No matching distribution found for (.+?)\s*$", re.MULTILINE)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Top-level files a wheel build may read (metadata, readme, license); nothing else is staged.
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README*", "LICENSE*", "NOTICE*", "COPYING*")
# Installer-owned files a reconstructed wheel must not carry (PEP 376 / PEP 610 / PEP 627).
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


class WheelError(PackagerError):
    """Device wheels cannot be gathered for a platform.

    ``package`` names the requirement pip could not satisfy (when known), ``platform`` the
    target platform tag.
    """

    def __init__(self, message: str, *, package: str | None = None, platform: str | None = None) -> None:
        self.package = package
        self.platform = platform
        super().__init__(message)


def _default_cache_dir() -> Path:
    override = os.environ.get("EDGEPACK_WHEEL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack" / "wheels"


@dataclass(frozen=True, kw_only=True)
class WheelOptions:
    """How ``device_wheels`` gathers wheels."""

    cache_dir: Path | None = None
    """Wheels downloaded before are kept here and tried first, offline. Default:
    ``$EDGEPACK_WHEEL_CACHE`` or ``~/.cache/edgepack/wheels``."""
    pin_installed: bool = True
    """Pin every device dependency to the version installed here (where parity ran),
    unless ``requirements`` already constrains it."""
    edgepack_wheel: Path | None = None
    """Use this edgepack wheel instead of building one from the source tree."""
    pip: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "pip"))
    """The pip command to run."""
    timeout: float = 900.0
    """Seconds one pip run may take before it is stopped."""


def normalize_python_version(python_version: str) -> tuple[str, str]:
    """``"3.11"``, ``"3.11.7"`` or ``"311"`` -> (``"3.11"``, ``"cp311"``)."""
    text = python_version.strip()
    match = re.fullmatch(r"(\d)\.(\d+)(?:\.\d+)?", text) or re.fullmatch(r"(\d)(\d+)", text)
    if not match:
        raise WheelError(f"python version {python_version!r} is not understood; expected e.g. '3.11'")
    major, minor = match.groups()
    return f"{major}.{minor}", f"cp{major}{minor}"


def platform_tags(platform: str) -> list[str]:
    """Every platform tag a device of ``platform`` accepts, most specific first.

    pip's ``--platform manylinux_2_28_x86_64`` matches only wheels tagged exactly that,
    while a device with glibc 2.28 also installs ``manylinux_2_17``/``manylinux2014``
    wheels (most of PyPI): expand the same way the device's pip will.
    """
    if not _PLATFORM_RE.match(platform):
        raise WheelError(
            f"platform {platform!r} is not a wheel platform tag; expected e.g. "
            "'manylinux_2_28_x86_64', 'manylinux_2_28_aarch64' or 'musllinux_1_2_x86_64'",
            platform=platform,
        )
    for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            platform = f"manylinux_{major}_{minor}_{platform[len(legacy) + 1:]}"
    if match := _MANYLINUX_RE.match(platform):
        major, minor, arch = int(match[1]), int(match[2]), match[3]
        tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
        for legacy, glibc in _LEGACY_MANYLINUX.items():
            if glibc <= (major, minor):
                tags.append(f"{legacy}_{arch}")
        return tags
    if match := _MUSLLINUX_RE.match(platform):
        major, minor, arch = int(match[1]), int(match[2]), match[3]
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    return [platform]


def device_wheels(
    platforms: Sequence[str],
    python_version: str,
    requirements: Sequence[str],
    *,
    options: WheelOptions = WheelOptions(),
) -> dict[str, bytes]:
    """Return ``{"wheels/<platform>/<file>.whl": bytes}`` for every platform.

    ``requirements`` are pinned device requirement lines (the bundle's
    ``requirements.txt``, e.g. ``onnxruntime==1.32.0``); blank lines and comments are
    ignored. Raises ``WheelError`` naming the package and platform when a wheel does
    not exist (onnxruntime has none for ``linux_armv7l``, for instance).
    """
    if isinstance(platforms, str):
        platforms = [platforms]
    if not platforms:
        return {}
    seen: set[str] = set()
    for platform in platforms:
        platform_tags(platform)
        if platform in seen:
            raise WheelError(f"platform {platform!r} is given twice; give each platform once", platform=platform)
        seen.add(platform)
    version, abi = normalize_python_version(python_version)
    pinned = _parse_requirements(requirements)
    cache = options.cache_dir or _default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgepack-wheels-") as tmp:
        work = Path(tmp)
        own = edgepack_wheel(work / "own", options=options)
        constraints = _installed_pins(_wheel_requires(own), version, given=pinned) if options.pin_installed else []
        constraint_file = work / "constraints.txt"
        constraint_file.write_text("".join(f"{c}\n" for c in constraints))
        out: dict[str, bytes] = {}
        for platform in platforms:
            dest = work / "dl" / platform
            _download(own, pinned, constraint_file, dest, cache, platform, version, abi, options)
            wheels = sorted(dest.glob("*.whl"))
            if not any(canonicalize_name(parse_wheel_filename(w.name)[0]) == DIST_NAME for w in wheels):
                raise WheelError(f"pip did not place the edgepack wheel for {platform}", package=DIST_NAME, platform=platform)
            for wheel in wheels:
                out[f"{WHEELS_PREFIX}{platform}/{wheel.name}"] = wheel.read_bytes()
                cached = cache / wheel.name
                if not cached.exists() and canonicalize_name(parse_wheel_filename(wheel.name)[0]) != DIST_NAME:
                    # Copy then rename: a concurrent build never sees half a wheel.
                    partial = cache / f".{wheel.name}.{os.getpid()}.part"
                    shutil.copyfile(wheel, partial)
                    os.replace(partial, cached)
        return out


def _parse_requirements(lines: Sequence[str]) -> list[Requirement]:
    parsed = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parsed.append(Requirement(line))
        except InvalidRequirement as exc:
            raise WheelError(f"device requirement {line!r} is not a valid requirement: {exc}") from exc
    return parsed


def _wheel_requires(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel: the device install of edgepack, as built."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            text = zf.read(meta).decode()
    except (zipfile.BadZipFile, StopIteration, OSError, UnicodeDecodeError) as exc:
        raise WheelError(f"{wheel.name} is not a readable wheel (no .dist-info/METADATA)", package=DIST_NAME) from exc
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _installed_pins(requires: Sequence[str], python_version: str, *, given: Sequence[Requirement]) -> list[str]:
    """``name==version`` for ``requires`` (no extras) and their dependencies, as installed here.

    A requirement in ``given`` wins: an exact pin there is left alone, and an installed
    version outside a range there is not pinned.
    """
    # Markers are judged for the target interpreter, not the one running the build.
    env = {"extra": "", "python_version": python_version, "python_full_version": f"{python_version}.0"}
    pins: dict[str, str] = {}
    todo = [r for r in map(Requirement, requires) if not r.marker or r.marker.evaluate(env)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pins or name == DIST_NAME:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: let pip choose, nothing passed parity with it anyway
        pins[name] = dist.version
        todo.extend(r for r in map(Requirement, dist.requires or []) if not r.marker or r.marker.evaluate(env))
    ranges = {canonicalize_name(r.name): r.specifier for r in given}
    return [
        f"{name}=={version}"
        for name, version in sorted(pins.items())
        if name not in ranges
        or (not any(s.operator in ("==", "===") for s in ranges[name]) and ranges[name].contains(version, prereleases=True))
    ]


def _download(
    own: Path,
    requirements: list[Requirement],
    constraints: Path,
    dest: Path,
    cache: Path,
    platform: str,
    version: str,
    abi: str,
    options: WheelOptions,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    args = [
        *options.pip, "download", "--disable-pip-version-check", "--no-input",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", version, "--abi", abi,
        *(arg for tag in platform_tags(platform) for arg in ("--platform", tag)),
        "--dest", str(dest), "--find-links", str(cache), "--constraint", str(constraints),
        str(own), *(str(r) for r in requirements),
    ]  # fmt: skip
    # Offline first: a cache that already holds a full resolution needs no index at all.
    offline = _run(args + ["--no-index"], options)
    if offline.returncode == 0:
        return
    for stale in dest.iterdir():
        stale.unlink()
    online = _run(args, options)
    if online.returncode != 0:
        raise _translate(online.stdout + online.stderr, platform)


def _run(args: list[str], options: WheelOptions) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=options.timeout, check=False)
    except FileNotFoundError as exc:
        raise WheelError(f"cannot run pip ({args[0]!r} not found); --with-deps needs pip on the build machine") from exc
    except subprocess.TimeoutExpired as exc:
        raise WheelError(f"pip took longer than {options.timeout:.0f} s gathering wheels; is the package index reachable?") from exc


def _missing(output: str) -> tuple[str, str] | None:
    """(requirement, package name) from pip's "No matching distribution found for X"."""
    match = _NO_MATCH_RE.search(output)
    if not match:
        return None
    wanted = match[1].strip()
    try:
        return wanted, Requirement(wanted).name
    except InvalidRequirement:
        return wanted, wanted.split()[0]


def _translate(output: str, platform: str) -> WheelError:
    tail = "\n".join(output.strip().splitlines()[-8:])
    missing = _missing(output)
    # An unreachable index also ends in "no matching distribution": say what really failed.
    if any(s in output for s in ("Failed to establish a new connection", "Could not fetch URL", "NewConnectionError")):
        return WheelError(
            f"the package index is unreachable and the wheel cache lacks wheels for {platform}; "
            f"build once with network access (the cache is reused afterwards):\n{tail}",
            package=missing[1] if missing else None,
            platform=platform,
        )
    if missing:
        wanted, package = missing
        return WheelError(
            f"no wheel of {wanted} exists for platform {platform} (pip: no matching distribution); "
            f"drop --with-deps {platform}, or choose a platform {package} publishes wheels for",
            package=package,
            platform=platform,
        )
    if "conflicting dependencies" in output or "ResolutionImpossible" in output:
        return WheelError(f"device requirements conflict for platform {platform}:\n{tail}", platform=platform)
    return WheelError(f"pip could not gather wheels for platform {platform}:\n{tail}", platform=platform)


# -- edgepack's own wheel -----------------------------------------------------------------


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
    cached_dir = (options.cache_dir or _default_cache_dir()) / "edgepack-builds" / digest.hexdigest()
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

