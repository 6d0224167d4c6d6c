"""``edgepack build`` and ``edgepack keygen`` through the real command line (click's runner,
the real registry, real bundles)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from runtime.bundle import read_bundle
from tests.packager.conftest import Registry


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_build_json_report_describes_the_written_bundle(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "fire.edgepkg"
    result = _run("build", "models:/fire@champion", "-o", str(out), "--tracking-uri", registry.uri, "--json", "--no-tag")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == read_bundle(out).sha256
    assert (report["model_name"], report["model_version"], report["resolved"]) == ("fire", "1", {"kind": "alias", "value": "champion"})
    assert report["size"] == out.stat().st_size and report["path"] == str(out)
    assert report["parity"] == read_bundle(out).manifest["parity"] and report["tagged"] is False


def test_build_human_summary(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "h.edgepkg"
    result = _run("build", "models:/fire/Production", "-o", str(out), "--tracking-uri", registry.uri)
    assert result.exit_code == 0, result.output
    text = result.stdout
    size = out.stat().st_size
    assert str(out) in text and "fire version 2 (stage Production, sklearn, classification)" in text
    assert "labels agree 100%" in text and f"{size} bytes" in text and "parity" in text


def test_keep_string_encoding_builds_a_bundle_that_feeds_strings_to_the_graph(registry: Registry, tmp_path: Path) -> None:
    kept, cut = tmp_path / "kept.edgepkg", tmp_path / "cut.edgepkg"
    for out, extra in ((kept, ["--keep-string-encoding"]), (cut, [])):
        result = _run("build", "models:/fire/1", "-o", str(out), "--tracking-uri", registry.uri, "--no-tag", *extra)
        assert result.exit_code == 0, result.output
    region = {p.name: next(i for i in read_bundle(p).manifest["inputs"] if i["name"] == "region") for p in (kept, cut)}
    assert "encoding" not in region["kept.edgepkg"] and region["cut.edgepkg"]["encoding"]["kind"] == "one_hot"
    dtypes = {s["name"]: s["dtype"] for s in read_bundle(kept).manifest["onnx_inputs"]}
    assert dtypes[region["kept.edgepkg"]["onnx_input"]] == "string"


def test_keygen_then_signed_build_verifies(registry: Registry, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = _run("keygen", str(keys))
    assert result.exit_code == 0 and (keys / "edge.pem").exists() and (keys / "edge.pub").exists()
    assert (keys / "edge.pem").stat().st_mode & 0o777 == 0o600
    again = _run("keygen", str(keys))
    assert again.exit_code == 1 and "already exists" in again.stderr and "Traceback" not in again.output

    out = tmp_path / "s.edgepkg"
    result = _run("build", "models:/fire/1", "-o", str(out), "--tracking-uri", registry.uri, "--sign-key", str(keys / "edge.pem"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signed"] is True
    assert read_bundle(out, public_key=keys / "edge.pub").signature_verified


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["models:/nope/Production"], 4, "no registered model named 'nope'"),
        (["models:/fire@gold"], 4, "its aliases: @champion -> 1"),
        (["not-a-uri"], 4, "expected models:/NAME/STAGE"),
        (["models:/fire/1", "--abs-tol", "0", "--rel-tol", "0"], 3, "does not answer like the original"),
        (["models:/fire/1", "--abs-tol", "-1"], 1, "expected a number >= 0"),
        (["models:/fire/1", "--sign-key", __file__], 1, "not an unencrypted PEM private key"),
    ],
)
def test_errors_map_to_exit_codes_with_the_message_and_no_traceback(registry: Registry, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    out = tmp_path / "x.edgepkg"
    result = _run("build", *args, "-o", str(out), "--tracking-uri", registry.uri, "--no-tag")
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_reference_data_option_and_missing_file(registry: Registry, tmp_path: Path) -> None:
    registry.X.to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "r.edgepkg"
    result = _run("build", "models:/fire/1", "-o", str(out), "--tracking-uri", registry.uri, "--reference-data", str(tmp_path / "ref.csv"), "--json", "--no-tag")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["rows"] >= len(registry.X.dropna())
    missing = _run("build", "models:/fire/1", "-o", str(out), "--reference-data", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_build_in_a_subprocess_exits_non_zero_without_traceback(registry: Registry, tmp_path: Path) -> None:
    # The installed console script, end to end: what a CI job sees.
    exe = Path(sys.executable).with_name("edgepack")
    proc = subprocess.run(
        [str(exe), "build", "models:/fire/7", "-o", str(tmp_path / "x.edgepkg"), "--tracking-uri", registry.uri],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 4
    assert "model 'fire' has no version 7; its versions: 1, 2, 3" in proc.stderr and "Traceback" not in proc.stderr


_WITHOUT_SKL2ONNX = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'skl2onnx':\n"
    "            raise ModuleNotFoundError(f'blocked: {name}')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_missing_packager_extra_names_the_pip_command(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    probe = _WITHOUT_SKL2ONNX + "import packager\n"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "MissingExtraError" in proc.stderr and "pip install 'edgepack[packager]'" in proc.stderr and "skl2onnx" in proc.stderr

    cli_run = _WITHOUT_SKL2ONNX + "sys.argv = ['edgepack', 'build', 'models:/m/1', '-o', sys.argv[1]]\nfrom edgepack.cli import main\nmain()\n"
    proc = subprocess.run([sys.executable, "-c", cli_run, str(tmp_path / "x.edgepkg")], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "pip install 'edgepack[packager]'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_registry_that_does_not_exist_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    result = _run("build", "models:/fire/1", "-o", str(tmp_path / "x.edgepkg"), "--tracking-uri", f"sqlite:///{missing}")
    assert result.exit_code == 4 and "no MLflow registry database at" in result.stderr and str(missing) in result.stderr
    assert not missing.parent.exists()
    # The default, sqlite:///mlflow.db in the working directory, says so too.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = _run("build", "models:/fire/1", "-o", "x.edgepkg")
    assert result.exit_code == 4 and "sqlite:///mlflow.db" in result.stderr and not (tmp_path / "mlflow.db").exists()


def _version_tags(registry: Registry, name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri).get_model_version(name, version).tags)


def test_rebuilds_keep_one_registry_tag_per_bundle_and_the_report_says_so(registry: Registry, tmp_path: Path) -> None:
    assert _run("keygen", str(tmp_path / "keys")).exit_code == 0
    shas = []
    for i, extra in enumerate(([], ["--sign-key", str(tmp_path / "keys" / "edge.pem")])):
        out = tmp_path / f"b{i}.edgepkg"
        result = _run("build", "models:/fire/3", "-o", str(out), "--tracking-uri", registry.uri, "--trust-pickle", *extra)
        assert result.exit_code == 0, result.output
        sha = read_bundle(out).sha256
        shas.append(sha)
        assert f"tagged  fire version 3 in the registry: edgepack.bundle.{sha[:16]}=" in result.stdout
    assert shas[0] != shas[1]
    tags = _version_tags(registry, "fire", "3")
    # Every build stays findable; the plain tag names the latest.
    assert tags[f"edgepack.bundle.{shas[0][:16]}"] == shas[0] and tags[f"edgepack.bundle.{shas[1][:16]}"] == shas[1]
    assert tags["edgepack.bundle_sha256"] == shas[1]
    untagged = _run("build", "models:/fire/3", "-o", str(tmp_path / "n.edgepkg"), "--tracking-uri", registry.uri, "--trust-pickle", "--no-tag")
    assert "tagged  nothing (--no-tag)" in untagged.stdout


def test_build_without_reference_data_warns_what_the_bundle_lacks(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "w.edgepkg"
    result = _run("build", "models:/fire/1", "-o", str(out), "--tracking-uri", registry.uri, "--no-tag", "--json")
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    unranged = [f["name"] for f in read_bundle(out).manifest["inputs"] if f["kind"] == "numeric" and f["range"] is None]
    assert unranged, "the fixture model has numeric features without a scaler-known range"
    range_warning = next(w for w in warnings if "out_of_range" in w)
    assert all(name in range_warning for name in unranged) and "--reference-data" in range_warning
    assert any("synthesised rows" in w and "drift" in w for w in warnings)
    human = _run("build", "models:/fire/1", "-o", str(tmp_path / "w2.edgepkg"), "--tracking-uri", registry.uri, "--no-tag")
    assert sum(line.startswith("warning ") for line in human.stdout.splitlines()) == len(warnings)

    registry.X.to_csv(tmp_path / "ref.csv", index=False)
    with_ref = _run("build", "models:/fire/1", "-o", str(tmp_path / "r.edgepkg"), "--tracking-uri", registry.uri, "--no-tag",
                    "--reference-data", str(tmp_path / "ref.csv"), "--json")
    assert with_ref.exit_code == 0, with_ref.output
    assert json.loads(with_ref.stdout)["warnings"] == []


def test_build_refuses_to_replace_a_bundle_unless_forced(registry: Registry, tmp_path: Path) -> None:
    out = tmp_path / "kept.edgepkg"
    assert _run("build", "models:/fire/1", "-o", str(out), "--tracking-uri", registry.uri, "--no-tag").exit_code == 0
    before = out.read_bytes()
    again = _run("build", "models:/fire/2", "-o", str(out), "--tracking-uri", registry.uri, "--no-tag")
    assert again.exit_code == 1 and out.read_bytes() == before
    assert again.stderr.startswith(f"error: {out} already exists (a bundle of fire version 1); pass --force")
    forced = _run("build", "models:/fire/2", "-o", str(out), "--tracking-uri", registry.uri, "--no-tag", "--force")
    assert forced.exit_code == 0 and read_bundle(out).manifest["model"]["version"] == "2"


def test_keygen_says_why_it_refuses_and_force_replaces_the_pair(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert _run("keygen", str(keys)).exit_code == 0
    old = (keys / "edge.pem").read_bytes(), (keys / "edge.pub").read_bytes()
    refused = _run("keygen", str(keys))
    assert refused.exit_code == 1 and ((keys / "edge.pem").read_bytes(), (keys / "edge.pub").read_bytes()) == old
    for hint in ("already exists", "--sign-key", "edgepack keygen OTHER_DIR", "--force"):
        assert hint in refused.stderr
    forced = _run("keygen", str(keys), "--force")
    assert forced.exit_code == 0
    new = (keys / "edge.pem").read_bytes(), (keys / "edge.pub").read_bytes()
    assert new[0] != old[0] and new[1] != old[1] and (keys / "edge.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in keys.iterdir()) == ["edge.pem", "edge.pub"]
    from runtime.signing import load_private_key

    from cryptography.hazmat.primitives import serialization

    derived = load_private_key(keys / "edge.pem").public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert derived == new[1]


def test_build_help_lists_the_exit_codes() -> None:
    text = _run("build", "--help").stdout
    for code, what in ((3, "parity"), (4, "registry"), (5, "model"), (6, "reference data")):
        assert any(line.strip().startswith(str(code)) and what in line for line in text.splitlines()), (code, text)
