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
