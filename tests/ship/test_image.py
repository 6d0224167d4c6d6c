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


def test_health_check_fails_when_serve_is_not_running(image: BuiltImage) -> None:
    # The healthcheck goes through serve's /v2/health/ready: no serve, not healthy.
    done = image.buildah.run(image.name, "/opt/edgepack/docker/healthcheck.sh")
    assert done.returncode != 0
    assert "edgepack serve does not answer on /run/edgepack/edgepack.sock" in done.stderr


def test_default_command_without_an_endpoint_says_what_to_set(image: BuiltImage) -> None:
    done = image.buildah.run(image.name, ENTRYPOINT)
    assert done.returncode != 0
    assert "EDGEPACK_ENDPOINT" in done.stderr


def test_image_refuses_to_start_without_its_public_key(image: BuiltImage) -> None:
    with image.buildah.container(image.name) as container:
        container.set_env(EDGEPACK_PUBLIC_KEY="/opt/edgepack/missing.pub")
        done = container.run(ENTRYPOINT, "edgepack", "predict", BUNDLE_IN_IMAGE, stdin=_rows_jsonl(image.rows[:2]))
        assert done.returncode == 78, done.stderr
        assert "no public key at /opt/edgepack/missing.pub" in done.stderr
        assert done.stdout.strip() == ""
        health = container.run("/opt/edgepack/docker/healthcheck.sh")
        assert health.returncode != 0
        assert "no public key" in health.stderr


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
    with image.buildah.container(image.name, copy={str(tampered): BUNDLE_IN_IMAGE}) as container:
        container.set_env(EDGEPACK_ENDPOINT="http://127.0.0.1:9", EDGEPACK_TOKEN_FILE="/opt/edgepack/edge.pub")
        agent = container.run(ENTRYPOINT)  # the default command installs into the store first: refused
        assert agent.returncode == 3, agent.stderr
        assert "golden.json" in agent.stderr


# An app in another container: it talks to serve through the socket on the shared volume.
APP = r"""
import http.client, json, socket, sys, time

class Unix(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=30)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/edgepack/edgepack.sock")

def call(method, path, body=None):
    c = Unix()
    c.request(method, path, body=None if body is None else json.dumps(body), headers={"content-type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()

deadline = time.monotonic() + 90
while True:
    try:
        if call("GET", "/v2/health/ready")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("serve never became ready")
    time.sleep(0.2)
rows = json.load(open(sys.argv[1]))
status, body = call("POST", "/v1/predict", rows)
assert status == 200, body
meta = json.loads(call("GET", "/v2/models/fire-risk")[1])
inputs = [{"name": i["name"], "datatype": i["datatype"], "shape": [len(rows)], "data": [r[i["name"]] for r in rows]} for i in meta["inputs"]]
status, v2 = call("POST", "/v2/models/fire-risk/infer", {"inputs": inputs})
assert status == 200, v2
print(json.dumps({"v1": json.loads(body), "v2": json.loads(v2), "meta": meta}))
"""

WAIT_FOR_SYNC = r"""
import json, sys, time, urllib.request
token = open(sys.argv[2]).read().strip()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    request = urllib.request.Request(sys.argv[1] + "/v1/stats", headers={"Authorization": "Bearer " + token})
    if json.load(urllib.request.urlopen(request, timeout=10))["records"] >= int(sys.argv[3]):
        sys.exit(0)
    time.sleep(0.3)
sys.exit("the agent's sync never delivered the records")
"""


def test_default_command_serves_on_the_shared_socket_and_syncs_to_a_real_collector(
    image: BuiltImage, collector, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(collector.token)
    rows = image.rows[:5]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "wait.py").write_text(WAIT_FOR_SYNC)
    script = (
        "/opt/edgepack/docker/entrypoint.sh & agent=$!\n"
        "python /opt/edgepack-test/app.py /opt/edgepack-test/rows.json > /var/lib/edgepack/app.out || exit 11\n"
        "/opt/edgepack/docker/healthcheck.sh || exit 12\n"
        f"python /opt/edgepack-test/wait.py {collector.url} /opt/edgepack-test/token {len(rows) * 2} || exit 13\n"
        "ls -l /run/edgepack/edgepack.sock > /var/lib/edgepack/socket.txt\n"
        "kill -TERM $agent; wait $agent; echo \"agent=$?\"\n"
        "cat /var/lib/edgepack/app.out /var/lib/edgepack/socket.txt\n"
    )
    files = {str(tmp_path / name): f"/opt/edgepack-test/{name}" for name in ("token", "rows.json", "app.py", "wait.py")}
    with image.buildah.container(image.name, copy=files) as container:
        container.set_env(EDGEPACK_ENDPOINT=collector.url, EDGEPACK_TOKEN_FILE="/opt/edgepack-test/token", EDGEPACK_SYNC_ARGS="--interval 0.3")
        done = container.run("sh", "-c", script, offline=False)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.strip().splitlines()
        assert "agent=0" in lines, done.stdout + done.stderr
        answers = json.loads(lines[-2])
        assert lines[-1].startswith("srw-------"), lines[-1]  # the socket is owner-only
        healthy = container.run("/opt/edgepack/docker/healthcheck.sh")  # serve stopped with the agent
        assert healthy.returncode != 0
    expected = host_predictions(image.bundle, rows, image.public_key)
    assert_same_predictions(answers["v1"], expected)
    outputs = {o["name"]: o for o in answers["v2"]["outputs"]}
    assert outputs["prediction"]["data"] == [e["prediction"] for e in expected]
    classes = json.loads(outputs["probabilities"]["parameters"]["classes"])
    assert outputs["probabilities"]["shape"] == [len(rows), len(classes)]
    flat = [e["probabilities"][str(c)] for e in expected for c in classes]
    assert outputs["probabilities"]["data"] == pytest.approx(flat, rel=1e-6, abs=1e-7)
    stored = collector.records()
    assert len(stored) == 2 * len(rows)  # serve recorded both calls into the buffer, sync sent them
    import runtime

    assert {row["bundle_sha256"] for row in stored} == {runtime.read_bundle(image.bundle).sha256}

    def canonical(items: list[dict]) -> list[str]:
        return sorted(json.dumps(item, sort_keys=True) for item in items)

    assert canonical([row["inputs"] for row in stored]) == canonical(rows + rows)
