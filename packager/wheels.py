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

import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import WheelError
from .options import WheelOptions, default_wheel_cache
from .own_wheel import DIST_NAME, edgepack_wheel

WHEELS_PREFIX = "wheels/"

_PLATFORM_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_MANYLINUX_RE = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_MUSLLINUX_RE = re.compile(r"^musllinux_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_NO_MATCH_RE = re.compile(r"No matching distribution found for (.+?)\s*$", re.MULTILINE)


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
    cache = options.cache_dir or default_wheel_cache()
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
