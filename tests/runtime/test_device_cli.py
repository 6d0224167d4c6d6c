"""edgepack predict / inspect / verify, run as a user would (click runner and a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import runtime
from edgepack.cli import cli

from . import builder

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, input: str | None = None) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def _lines(stdout: list[str]) -> list[dict]:
    return [json.loads(line) for line in stdout]


def test_predict_jsonl_good_and_bad_rows(tmp_path: Path, fire: builder.Built, good_row: dict) -> None:
    rows = [
        json.dumps(good_row),
        json.dumps({**good_row, "temp c": "hot"}),
        "",
        "{not json",
        json.dumps({**good_row, "region": "highlands", "humidity_pct": None}),
        json.dumps([1, 2]),
        json.dumps({"temp c": 1.0}),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(rows) + "\n")
    code, out, err = _run("predict", str(fire.path), "--input", str(path))
    assert code == 1
    results = _lines(out)
    assert [r["row"] for r in results] == [1, 2, 3, 4, 5, 6]
    model = runtime.load(fire.path)
    expected = model.predict(good_row)
    assert results[0] == {"row": 1, "prediction": expected["prediction"],
                          "probabilities": {str(k): v for k, v in expected["probabilities"].items()}, "flags": []}
    assert results[1] == {"row": 2, "error": "feature 'temp c' got str 'hot'; expected a number (training range 4.47 to 35.33)"}
    assert results[2]["error"].startswith("not valid JSON")
    assert results[3]["flags"] == ["unseen_category:region"] and results[3]["prediction"] in (0, 1)
    assert results[4] == {"row": 5, "error": "expected a JSON object of feature -> value, got list"}
    assert results[5]["error"].startswith("missing feature(s) 'humidity_pct', 'wind_kmh', 'region', 'vegetation'")
    assert "4 row(s) refused" in err


def test_predict_all_good_rows_exit_zero_from_stdin(fire: builder.Built, good_row: dict) -> None:
    code, out, _ = _run("predict", str(fire.path), input=json.dumps(good_row) + "\n" + json.dumps(good_row) + "\n")
    assert code == 0
    assert len(_lines(out)) == 2


def test_predict_csv_converts_numbers_by_the_manifest(tmp_path: Path, fire: builder.Built, good_row: dict) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "\ufefftemp c,humidity_pct,wind_kmh,region,vegetation,station\n"
        "25.0,20.5,12,north,grass,A7\n"
        "30,,12,south,shrub,A8\n"
        "warm,1,2,north,grass,A9\n"
        "1,2,3\n"
    )
    code, out, _ = _run("predict", str(fire.path), "--input", str(path))
    results = _lines(out)
    model = runtime.load(fire.path)
    assert code == 1
    assert results[0]["probabilities"] == {str(k): v for k, v in model.predict(good_row)["probabilities"].items()}
    second = model.predict({**good_row, "temp c": 30.0, "humidity_pct": None, "region": "south", "vegetation": "shrub"})
    assert results[1]["prediction"] == second["prediction"]
    assert results[2] == {"row": 3, "error": "feature 'temp c' got 'warm', which is not a number; expected a number (training range 4.47 to 35.33)"}
    assert results[3] == {"row": 4, "error": "has 3 cells but the header has 6 columns"}


def test_predict_string_labels_and_strict(tmp_path: Path, levels: builder.Built, good_row: dict) -> None:
    code, out, _ = _run("predict", str(levels.path), "--strict", input=json.dumps(good_row) + "\n" + json.dumps({**good_row, "x": 1}) + "\n")
    results = _lines(out)
    assert code == 1
    assert set(results[0]["probabilities"]) == {"high", "low", "medium"}
    assert results[1]["error"].startswith("unexpected feature(s) 'x' (strict mode)")


def test_predict_refuses_a_bad_bundle_with_exit_3(tmp_path: Path, fire: builder.Built, other_keys: tuple[Path, Path]) -> None:
    code, out, err = _run("predict", str(fire.path), "--public-key", str(other_keys[1]), input="{}\n")
    assert code == 3 and out == []
    assert "signature does not match" in err


def test_predict_in_a_subprocess_keeps_good_rows(tmp_path: Path, fire: builder.Built, good_row: dict) -> None:
    lines = "\n".join([json.dumps(good_row), json.dumps({**good_row, "wind_kmh": None}), json.dumps(good_row)]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "edgepack", "predict", str(fire.path)], input=lines,
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [("error" in r) for r in out] == [False, True, False]
    assert out[1]["row"] == 2 and "feature 'wind_kmh' is not nullable" in out[1]["error"]


def test_inspect_human(fire: builder.Built) -> None:
    code, out, _ = _run("inspect", str(fire.path))
    text = "\n".join(out)
    assert code == 0
    assert "model      fire-risk version 1" in text
    assert "resolved   models:/fire-risk@champion -> alias 'champion' -> version 1" in text
    assert "signed     yes (not verified here" in text
    assert "humidity_pct  float32  numeric      yes   float_input[1]" in text
    assert "region        string   categorical  no    string_input[0]  east, north, south, west" in text
    assert "classification, classes [0, 1]" in text
    assert "label agreement 1.0" in text
    assert "model.onnx" in text and "requirements.txt" in text
    assert fire.bundle.sha256 in text


def test_inspect_json_and_wheels(tmp_path: Path, fire: builder.Built) -> None:
    wheel = ("wheels/manylinux_2_17_aarch64/numpy-2.0-cp311-cp311-manylinux_2_17_aarch64.whl", b"wheel bytes")
    path = builder.rewrite(fire.path, tmp_path / "with-wheels.edgepkg", files=dict([wheel]))
    code, out, _ = _run("inspect", str(path), "--json")
    info = json.loads("\n".join(out))
    assert code == 0
    assert info["model"]["name"] == "fire-risk" and info["signed"] is False
    assert info["wheels"] == {"manylinux_2_17_aarch64": ["numpy-2.0-cp311-cp311-manylinux_2_17_aarch64.whl"]}
    assert info["files_total_size"] == sum(e["size"] for e in info["files"].values())
    assert info["manifest"]["inputs"][0]["name"] == "temp c"
    code, out, _ = _run("inspect", str(path))
    assert "manylinux_2_17_aarch64: 1 wheels" in "\n".join(out)


def test_inspect_refuses_tampered(tmp_path: Path, fire: builder.Built) -> None:
    path = tmp_path / "t.edgepkg"
    path.write_bytes(builder.rezip(fire.path.read_bytes(), replace={"golden.json": b"{}"}))
    code, _, err = _run("inspect", str(path))
    assert code == 3 and "golden.json: size is 2 bytes" in err


def test_verify_ok_signed(fire: builder.Built, keys: tuple[Path, Path]) -> None:
    code, out, _ = _run("verify", str(fire.path), "--public-key", str(keys[1]), "--require-signature")
    assert code == 0
    assert out == [f"OK fire-risk version 1: hashes match, signature verified, self-test passed on 20 golden rows  (sha256 {fire.bundle.sha256})"]


def test_verify_unsigned_and_required(levels: builder.Built) -> None:
    code, out, _ = _run("verify", str(levels.path), "--allow-unsigned")
    assert code == 0 and "not signed" in out[0] and "authenticity NOT checked" in out[0]
    code, _, err = _run("verify", str(levels.path), "--require-signature")
    assert code == 3 and "not signed but a signature is required" in err


@pytest.mark.parametrize("tamper", ["hash", "self-test", "signature"])
def test_verify_tampered(tmp_path: Path, fire: builder.Built, keys: tuple[Path, Path], other_keys: tuple[Path, Path], tamper: str) -> None:
    path = tmp_path / "t.edgepkg"
    if tamper == "hash":
        path.write_bytes(builder.rezip(fire.path.read_bytes(), replace={"requirements.txt": b"y" * 35}))
        expected, key = "requirements.txt: sha256 is", keys[1]
    elif tamper == "self-test":
        builder.edit_golden(fire.path, path, lambda g: g["outputs"]["label"].__setitem__(0, 1 - g["outputs"]["label"][0]))
        expected, key = "golden.json: golden row 0: label is", None
    else:
        path = fire.path
        expected, key = "signature does not match", other_keys[1]
    args = ["verify", str(path)] + (["--public-key", str(key)] if key else [])
    code, out, err = _run(*args)
    assert code == 3 and out == []
    assert expected in err
