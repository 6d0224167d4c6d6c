"""buildah, driven from tests: a private image store, no registry, no network.

Every call runs buildah with its own ``--root``/``--runroot`` under the test's temporary
directory (nothing touches the machine's image store) and, with ``offline=True``, inside
a fresh network namespace (``unshare --net``) that has no route anywhere: an image build or
a container that tries to fetch anything fails instead of quietly using the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

TOOLS = ("buildah", "debootstrap", "unshare")
DEBIAN_MIRROR = os.environ.get("EDGEPACK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_TIMEOUT = 420
# The packages debootstrap needs, fetched ahead by scripts/install-image-tools.sh (network
# belongs to the install step); without it debootstrap downloads them itself.
DEBOOTSTRAP_TARBALL = Path(os.environ.get("EDGEPACK_DEBOOTSTRAP_TARBALL", "/var/cache/edgepack/debootstrap-bookworm-python3.tgz"))
DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=python3,python3-venv", "bookworm")
# dpkg fsyncs every file it unpacks; a throwaway test rootfs needs none of that.
_UNSAFE_IO = Path("etc/dpkg/dpkg.cfg.d/zz-edgepack-test-unsafe-io")
# What a minbase rootfs carries that no image needs; removed to keep the test base small.
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists")


def missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (debootstrap and buildah --isolation chroot need it)")
    return missing


def require_tools(missing: list[str], env: Mapping[str, str]) -> None:
    """Skip without the tools, except under CI, where a skip would hide a missing install step."""
    if not missing:
        return
    message = f"the image test needs {', '.join(missing)}: run scripts/install-image-tools.sh as root"
    if env.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


class Debootstrap:
    """Debian bookworm, minbase, with python3 and python3-venv: a stand-in for python:3.11-slim.

    Started in the background at once (it is mostly download and unpacking), so that the
    test can build its bundle meanwhile; ``wait()`` returns the finished rootfs.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.log = target.with_name(target.name + ".log")
        (target / _UNSAFE_IO).parent.mkdir(parents=True)
        (target / _UNSAFE_IO).write_text("force-unsafe-io\n")
        fetched = [f"--unpack-tarball={DEBOOTSTRAP_TARBALL}"] if DEBOOTSTRAP_TARBALL.is_file() else []
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["debootstrap", *DEBOOTSTRAP_ARGS[:2], *fetched, DEBOOTSTRAP_ARGS[2], str(target), DEBIAN_MIRROR],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait(self) -> Path:
        try:
            code = self.process.wait(timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        if code != 0:
            raise RuntimeError(f"debootstrap failed ({code}):\n{self.log.read_text(errors='replace')[-4000:]}")
        for part in _TRIM:
            shutil.rmtree(self.target / part, ignore_errors=True)
        (self.target / _UNSAFE_IO).unlink()
        return self.target

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Buildah:
    def __init__(self, state: Path, *, driver: str = os.environ.get("EDGEPACK_BUILDAH_DRIVER", "overlay")) -> None:
        self.root = state / "storage"
        self.runroot = state / "run"
        self.driver = driver

    def __call__(self, *args: str, offline: bool = False, stdin: str | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", self.driver, *args]
        if offline:
            command = ["unshare", "--net", *command]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def import_rootfs(self, rootfs: Path, name: str) -> str:
        container = self("from", "scratch").stdout.strip()
        try:
            self("copy", container, f"{rootfs}/", "/")
            self("commit", "--quiet", container, name)
        finally:
            self("rm", container, check=False)
        return name

    @contextlib.contextmanager
    def container(self, image: str, *, copy: dict[str, str] | None = None) -> Iterator[Container]:
        """A working container of ``image``, removed afterwards; ``copy`` maps host files to
        paths placed into it first (as root)."""
        name = self("from", "--quiet", image).stdout.strip()
        try:
            for source, target in (copy or {}).items():
                self("copy", name, source, target)
            yield Container(self, name)
        finally:
            self("rm", name, check=False)

    def run(self, image: str, *command: str, stdin: str | None = None, copy: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` offline in a fresh container of ``image`` (image user, env and workdir)."""
        with self.container(image, copy=copy) as container:
            return container.run(*command, stdin=stdin)

    def release(self) -> None:
        """Remove every container and unmount what buildah left mounted in the store (the
        overlay driver keeps its own bind mount), so the directory can be deleted."""
        self("rm", "--all", check=False)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(f"{self.root}/")), key=len, reverse=True):
            subprocess.run(["umount", target], capture_output=True, check=False)


class Container:
    """One working container: several commands share its filesystem (and its volumes)."""

    def __init__(self, buildah: Buildah, name: str) -> None:
        self.buildah = buildah
        self.name = name

    def run(self, *command: str, stdin: str | None = None, offline: bool = True) -> subprocess.CompletedProcess[str]:
        """``offline=False`` shares the host's network (chroot isolation has no other), to reach a loopback server."""
        return self.buildah("run", "--isolation", "chroot", self.name, "--", *command, offline=offline, stdin=stdin, check=False)

    def set_env(self, **env: str) -> None:
        self.buildah("config", *(arg for key, value in env.items() for arg in ("--env", f"{key}={value}")), self.name)
