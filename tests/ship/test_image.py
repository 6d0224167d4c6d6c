"""Dockerfile.edge, proven to build: buildah builds it offline from a debootstrapped Debian
base (passed with ``--from`` in place of python:3.11-slim, as no image registry is
reachable here), then the image verifies its bundle and predicts like the host.

Needs root, buildah, debootstrap and unshare (scripts/install-image-tools.sh). Under CI
(``CI=true``) a missing tool FAILS the test: a skip there would hide a missing install
step. Set ``EDGEPACK_TEST_ROOTFS`` to a debootstrapped directory to skip debootstrap while
developing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .buildah import Buildah, Debootstrap, missing_tools, require_tools
from .support import HEAVY, HEAVY_DISTRIBUTIONS, ROOT, DepsBundle, assert_same_predictions, host_predictions, parse_json_lines

pytestmark = pytest.mark.slow

BASE = "localhost/edgepack-test-base:bookworm"
IMAGE = "localhost/edgepack-edge-test:latest"
BUNDLE_IN_IMAGE = "/opt/edgepack/model.edgepkg"
ENTRYPOINT = "/opt/edgepack/docker/entrypoint.sh"


@dataclass(frozen=True)
class BuiltImage:
    buildah: Buildah
    name: str
    config: dict
    size: int
    bundle: Path
    """A copy of the bundle inside the image (what the host compares with)."""
    public_key: Path
    """The key the image verifies with."""
    rows: list[dict]
    """Sample rows for the model in the image."""


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """The image, built once per run however many pytest-xdist workers ask for it.

    The first worker to take the lock builds it into a store shared by all workers; the
    others wait and reuse it (buildah locks its store for concurrent use). The last worker
    done with it unmounts the store.
    """
    require_tools(missing_tools(), os.environ)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    state = shared / "edgepack-image"
    users = shared / "edgepack-image.users"
    failed = shared / "edgepack-image.failed"
    buildah = Buildah(state)
    with _locked(shared / "edgepack-image.lock"):
        if failed.exists():
            pytest.fail(f"building the image failed in another worker:\n{failed.read_text()}")
        if not (state / "image.json").exists():
            try:
                _build(buildah, state, request)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                buildah.release()
                raise
        count = int(users.read_text()) if users.exists() else 0
        users.write_text(str(count + 1))
    built = json.loads((state / "image.json").read_text())
    try:
        yield BuiltImage(
            buildah=buildah,
            name=IMAGE,
            config=built["config"],
            size=built["size"],
            bundle=state / "context" / "dist" / "model.edgepkg",
            public_key=state / "edge.pub",
            rows=built["rows"],
        )
    finally:
        with _locked(shared / "edgepack-image.lock"):
            left = int(users.read_text()) - 1
            users.write_text(str(left))
            if left == 0:
                buildah.release()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(buildah: Buildah, state: Path, request: pytest.FixtureRequest) -> None:
    given = os.environ.get("EDGEPACK_TEST_ROOTFS")
    # debootstrap runs in the background while the bundle is built.
    job = None if given else Debootstrap(state / "rootfs" / "bookworm")
    try:
        deps_bundle: DepsBundle = request.getfixturevalue("deps_bundle")
        rootfs = Path(given) if given else job.wait()
    finally:
        if job is not None:
            job.stop()
    buildah.import_rootfs(rootfs, BASE)

    context = state / "context"
    (context / "dist").mkdir(parents=True)
    shutil.copyfile(ROOT / "Dockerfile.edge", context / "Dockerfile.edge")
    shutil.copytree(ROOT / "docker", context / "docker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(deps_bundle.path, context / "dist" / "model.edgepkg")
    shutil.copyfile(deps_bundle.public_key, state / "edge.pub")
    buildah(
        "bud", "--isolation", "chroot", "--format", "docker", "--from", BASE,
        "--build-arg", "BUNDLE=dist/model.edgepkg",
        "--build-arg", f"PUBLIC_KEY_PEM={deps_bundle.public_key.read_text().strip()}",
        "-f", str(context / "Dockerfile.edge"), "-t", IMAGE, str(context),
        offline=True, timeout=600,
    )  # fmt: skip
    buildah("rm", "--all")  # bud leaves the base stage's working container (and its mount) behind
    config = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)
    size = _image_bytes(buildah, IMAGE)
    print(f"\nedge image {IMAGE}: {size / 1e6:.1f} MB (base {_image_bytes(buildah, BASE) / 1e6:.1f} MB)")
    if not given:
        shutil.rmtree(rootfs, ignore_errors=True)
    built = {"config": config, "size": size, "rows": deps_bundle.rows}
    (state / "image.json.part").write_text(json.dumps(built))
    (state / "image.json.part").rename(state / "image.json")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_image_tools_fail_under_ci(ci: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="buildah.*install-image-tools"):
        require_tools(["buildah"], {"CI": ci})


def test_missing_image_tools_skip_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="debootstrap"):
        require_tools(["debootstrap"], {})
    require_tools([], {"CI": "true"})  # nothing missing: neither


def _image_bytes(buildah: Buildah, name: str) -> int:
    listing = json.loads(buildah("images", "--json", name).stdout)
    number, unit = listing[0]["size"].split()  # buildah prints decimal units: "531 MB"
    return int(float(number) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


def _rows_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_image_verifies_its_bundle_then_predicts_like_the_host(image: BuiltImage) -> None:
    # `IMAGE edgepack predict BUNDLE` with rows on stdin, through the image's entrypoint.
    done = image.buildah.run(
        image.name, ENTRYPOINT, "edgepack", "predict", BUNDLE_IN_IMAGE, "--public-key", "/opt/edgepack/edge.pub",
        stdin=_rows_jsonl(image.rows),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "signature verified" in done.stderr  # the entrypoint's start-up verification, on stderr
    got = parse_json_lines(done.stdout)
    assert_same_predictions(got, host_predictions(image.bundle, image.rows, image.public_key))


def test_image_holds_no_build_side_packages(image: BuiltImage) -> None:
    probe = (
        "import importlib.util, json, importlib.metadata as m\n"
        f"mods = [n for n in {HEAVY!r} if importlib.util.find_spec(n)]\n"
        "dists = sorted(d.metadata['Name'].lower() for d in m.distributions())\n"
        "print(json.dumps({'mods': mods, 'dists': dists}))\n"
    )
    done = image.buildah.run(image.name, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["mods"] == []
    assert not set(found["dists"]) & set(HEAVY_DISTRIBUTIONS)
    assert {"edgepack", "onnxruntime", "numpy"} <= set(found["dists"])
    print(f"\nedge image {image.name}: {image.size / 1e6:.1f} MB, {len(found['dists'])} distributions")


def test_image_config_runs_unprivileged_with_a_health_check(image: BuiltImage) -> None:
    docker = image.config["Docker"]["config"]
    assert docker["User"] == "10001:10001"
    assert docker["Entrypoint"] == [ENTRYPOINT]
    assert docker["Healthcheck"]["Test"] == ["CMD", "/opt/edgepack/docker/healthcheck.sh"]
    env = dict(item.split("=", 1) for item in docker["Env"])
    assert env["EDGEPACK_BUNDLE"] == BUNDLE_IN_IMAGE
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert env["PATH"].startswith("/opt/edgepack/venv/bin:")


def test_health_check_passes_on_a_good_image(image: BuiltImage) -> None:
    done = image.buildah.run(image.name, "/opt/edgepack/docker/healthcheck.sh")
    assert done.returncode == 0, done.stderr


def test_default_command_without_an_endpoint_says_what_to_set(image: BuiltImage) -> None:
    done = image.buildah.run(image.name, ENTRYPOINT)
    assert done.returncode != 0
    assert "EDGEPACK_ENDPOINT" in done.stderr


def test_tampered_bundle_stops_the_container_before_anything_runs(image: BuiltImage, tmp_path: Path) -> None:
    tampered = tmp_path / "model.edgepkg"
    with zipfile.ZipFile(image.bundle) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data + b" " if info.filename == "golden.json" else data)
    done = image.buildah.run(
        image.name, ENTRYPOINT, "edgepack", "predict", BUNDLE_IN_IMAGE, stdin=_rows_jsonl(image.rows[:2]),
        copy={str(tampered): BUNDLE_IN_IMAGE},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # edgepack verify's "bundle refused"
    assert "golden.json" in done.stderr
    assert done.stdout.strip() == ""  # no prediction came out of a bundle that failed verification
    health = image.buildah.run(image.name, "/opt/edgepack/docker/healthcheck.sh", copy={str(tampered): BUNDLE_IN_IMAGE})
    assert health.returncode != 0


# The application side of a device: predictions recorded into the buffer the image syncs.
APP = """
import json, sys
import runtime, telemetry
buffer = telemetry.Buffer("/var/lib/edgepack/predictions.db")
model = runtime.load("/opt/edgepack/model.edgepkg", telemetry=buffer)
model.predict(json.load(open(sys.argv[1])))
buffer.close()
print(json.dumps({"sha256": model.sha256}))
"""


def test_default_command_sends_buffered_predictions_to_a_real_collector(
    image: BuiltImage, collector, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(collector.token)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(image.rows[:5]))
    files = {str(token): "/opt/edgepack-test/token", str(rows): "/opt/edgepack-test/rows.json"}
    with image.buildah.container(image.name, copy=files) as container:
        recorded = container.run("python", "-c", APP, "/opt/edgepack-test/rows.json")
        assert recorded.returncode == 0, recorded.stderr
        sha256 = json.loads(recorded.stdout)["sha256"]
        container.set_env(EDGEPACK_ENDPOINT=collector.url, EDGEPACK_TOKEN_FILE="/opt/edgepack-test/token", EDGEPACK_SYNC_ARGS="--once")
        sent = container.run(ENTRYPOINT, offline=False)  # no command: the image's sync service
        assert sent.returncode == 0, sent.stderr
        healthy = container.run("/opt/edgepack/docker/healthcheck.sh")  # now with a buffer to check
        assert healthy.returncode == 0, healthy.stderr
        container.run("python", "-c", "open('/var/lib/edgepack/predictions.db', 'r+b').write(b'not sqlite' * 20)")
        damaged = container.run("/opt/edgepack/docker/healthcheck.sh")
        assert damaged.returncode != 0
        assert "prediction buffer /var/lib/edgepack/predictions.db is damaged" in damaged.stderr
    stored = collector.records()
    assert len(stored) == 5
    assert {row["bundle_sha256"] for row in stored} == {sha256}
    def canonical(rows: list[dict]) -> list[str]:
        return sorted(json.dumps(row, sort_keys=True) for row in rows)

    assert canonical([row["inputs"] for row in stored]) == canonical(image.rows[:5])
