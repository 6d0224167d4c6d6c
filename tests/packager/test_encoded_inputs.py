"""Strings the runtime one-hot encodes itself (packager/encoded_inputs.py, runtime/encodings.py).

The packager cuts a graph's one-hot chain off and declares ``inputs[i].encoding``; the
runtime then feeds the floats. Each cut graph is compared, output for output and bit for
bit, with the same graph that keeps its strings, on rows with unknown categories, a string
that is a category of another column, empty strings and missing values; a bundle built with
the encoding predicts exactly like one built without it (which still loads, as every bundle
built before the field did); a kind or field the runtime does not know is refused by name.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import runtime
from packager.convert import convert
from runtime.bundle import read_bundle
from tests.packager.test_simplify import FINALS, _build, _fields, _fit, _fitted, _forest, _hostile, _logreg, _ops, _pipeline, _rows, _run
from tests.runtime.builder import rewrite

STRINGS = ["site", "crop", "shift"]


def _missing_strings(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.copy()
    rows.loc[5::9, "site"] = None
    rows.loc[6::11, "crop"] = None
    return rows


@pytest.mark.parametrize("precision", ["float32", "float64"])
@FINALS
def test_cut_graph_answers_bit_for_bit_like_the_graph_with_strings(final: Any, numeric_first: bool, precision: str) -> None:
    model, columns, X = _fitted(final, numeric_first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strings = convert(model, columns, precision, encode=False)
        encoded = convert(model, columns, precision)
    assert "LabelEncoder" in _ops(strings) and not strings.encodings
    assert "LabelEncoder" not in _ops(encoded) and "Equal" not in _ops(encoded)
    assert {spec["dtype"] for spec in encoded.onnx_inputs} <= {"float32", "float64"}
    assert set(encoded.encodings) == set(STRINGS)
    # Each column's slots stand for its own categories, in the encoder's order.
    assert encoded.encodings["site"] == {"kind": "one_hot", "categories": sorted(set(X["site"]))}
    assert encoded.encodings["shift"]["categories"] == sorted({"day", "night", "north"})
    if final is not _logreg:
        # Nothing but the scaler between the inputs and the trees: one input carries everything.
        assert len(encoded.onnx_inputs) == 1 and "Concat" not in _ops(encoded)
    frame = _missing_strings(pd.concat([X.head(200), _hostile(X)], ignore_index=True))
    for got, want in zip(_run(encoded, frame), _run(strings, frame)):
        np.testing.assert_array_equal(got, want)


def _without_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the way the packager did before it cut graphs: strings stay graph inputs."""
    import packager.encoded_inputs

    monkeypatch.setattr(packager.encoded_inputs, "encode_inputs", lambda onx, slots, onnx_inputs: (slots, onnx_inputs, {}))


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=np.float64 if pd.api.types.is_numeric_dtype(frame[c]) else object) for c in frame.columns}


@pytest.mark.parametrize("numeric_first", [True, False], ids=["numbers-first", "strings-first"])
def test_bundle_with_encoding_predicts_exactly_like_one_without(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numeric_first: bool
) -> None:
    X, y = _fields()
    # Strings first: the one-hot slots come before the numbers in the one input.
    model = _fit(_pipeline(_forest(), numeric_first=numeric_first), X, y)
    encoded_path = _build(tracking_uri, tmp_path, "fields-forest", model, X)
    with monkeypatch.context() as patch:
        _without_encoding(patch)
        plain_path = _build(tracking_uri, tmp_path, "fields-forest", model, X, out="plain.edgepkg")

    encoded_manifest, plain_manifest = read_bundle(encoded_path).manifest, read_bundle(plain_path).manifest
    assert [i["encoding"]["kind"] for i in encoded_manifest["inputs"] if "encoding" in i] == ["one_hot"] * 3
    assert not any("encoding" in i for i in plain_manifest["inputs"])  # a bundle as built before the field
    assert [s["dtype"] for s in encoded_manifest["onnx_inputs"]] == ["float64"]
    site = next(i for i in encoded_manifest["inputs"] if i["name"] == "site")
    assert (site["slot"] == 0) is (not numeric_first)
    assert "string" in [s["dtype"] for s in plain_manifest["onnx_inputs"]]

    encoded, plain = runtime.load(encoded_path), runtime.load(plain_path)
    assert encoded._binding is not None  # no string tensor left: the one-row IOBinding path
    frame = _missing_strings(pd.concat([X.head(100), _hostile(X)], ignore_index=True))
    rows = _rows(frame)
    assert any(r["site"] is None for r in rows) and any(r["rain"] is None for r in rows)
    one_by_one = [encoded.predict(r) for r in rows]
    assert one_by_one == [plain.predict(r) for r in rows]
    assert any("unseen_category:site" in r["flags"] for r in one_by_one)
    assert encoded.predict(rows) == plain.predict(rows)
    assert encoded.predict(frame) == plain.predict(frame)  # a DataFrame: the column path
    assert encoded.predict(rows[:3]) == plain.predict(rows[:3])
    batch_a, batch_b = encoded.predict_batch(_columns(frame)), plain.predict_batch(_columns(frame))
    np.testing.assert_array_equal(batch_a["probabilities"], batch_b["probabilities"])
    assert batch_a["prediction"].tolist() == batch_b["prediction"].tolist() and batch_a["flags"] == batch_b["flags"]
    for i in (0, 5, 6):  # one row of numpy columns takes the row path; with None, the column path
        one = {c: v[i : i + 1] for c, v in _columns(frame).items()}
        a, b = encoded.predict_batch(one), plain.predict_batch(one)
        np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
        assert a["flags"] == b["flags"]
    few = {c: v[4:7] for c, v in _columns(frame).items()}  # a few rows of numpy columns: the row path
    a, b = encoded.predict_batch(few), plain.predict_batch(few)
    np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
    # Telemetry records the caller's strings (None for a missing one), not the one-hot floats.
    for sink in (_Sink(), _ValuesSink()):
        records = []
        for bundle in (encoded_path, plain_path):
            sink.inputs.clear()
            device = runtime.load(bundle, telemetry=sink)
            for r in rows[:8] + rows[100:104]:
                device.predict(r)
            records.append(list(sink.inputs))
        assert records[0] == records[1] and len(records[0]) == 12
        assert records[0][5]["site"] is None and records[0][8]["site"] == "atlantis"
    # Strict mode refuses the same unknown category the same way.
    for bundle in (encoded_path, plain_path):
        with pytest.raises(runtime.InputError, match="'site' got 'atlantis'"):
            runtime.load(bundle, strict=True).predict(rows[100])


class _Sink:
    """A telemetry sink that takes inputs as a mapping."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    def record(self, *, inputs: dict[str, Any], **_: Any) -> None:
        self.inputs.append(dict(inputs))


class _ValuesSink(_Sink):
    """A telemetry sink that takes inputs as names and values (as telemetry.Buffer does)."""

    def record_values(self, *, names: tuple[str, ...], values: tuple[Any, ...], **_: Any) -> None:
        self.inputs.append(dict(zip(names, values)))


@pytest.fixture(scope="module")
def encoded_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with encoded inputs, built through a real registry."""
    from tests.support.registry import register_model

    tmp = tmp_path_factory.mktemp("encoded")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    X, y = _fields()
    model = _fit(_pipeline(_forest()), X, y)
    register_model(uri, "encoded-forest", model, X, alias="champion")
    from packager import build_bundle

    path = tmp / "encoded.edgepkg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_bundle("models:/encoded-forest@champion", path, tracking_uri=uri, reference_data=X)
    return path


def _encoded_index(manifest: dict[str, Any]) -> int:
    return next(i for i, entry in enumerate(manifest["inputs"]) if "encoding" in entry)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e: e.update(kind="ordinal"), r"inputs\[{i}\]\.encoding \('site'\) has kind 'ordinal', which this runtime does not know"),
        (lambda e: e.pop("kind"), r"inputs\[{i}\]\.encoding \('site'\) has kind None"),
        (lambda e: e.update(offset=3), r"inputs\[{i}\]\.encoding \('site'\) has field\(s\) offset"),
        (lambda e: e.update(categories=[]), r"inputs\[{i}\]\.encoding \('site'\)\.categories must be a non-empty list"),
        (lambda e: e.update(categories=["north", "north", "south", "west"]), r"\.categories must be a non-empty list of distinct strings"),
        (lambda e: e.update(categories=["east", "north", "south"]), r"onnx input 'double_input' has width \d+ but its features fill slots"),
    ],
    ids=["unknown-kind", "no-kind", "unknown-field", "no-categories", "repeated-category", "width-mismatch"],
)
def test_encoding_the_runtime_cannot_feed_is_refused_naming_the_field(encoded_bundle: Path, tmp_path: Path, change: Any, message: str) -> None:
    manifest = read_bundle(encoded_bundle).manifest
    index = _encoded_index(manifest)
    assert manifest["inputs"][index]["name"] == "site"

    def edit(m: dict[str, Any]) -> None:
        change(m["inputs"][index]["encoding"])

    bad = rewrite(encoded_bundle, tmp_path / "bad.edgepkg", edit=edit)
    with pytest.raises(runtime.BundleError, match=message.replace("{i}", str(index))) as caught:
        runtime.load(bad)
    assert caught.value.entry == "manifest.json"


def test_encoding_on_a_feature_it_cannot_apply_to_is_refused(encoded_bundle: Path, tmp_path: Path) -> None:
    manifest = read_bundle(encoded_bundle).manifest
    numeric = next(i for i, entry in enumerate(manifest["inputs"]) if entry["dtype"] != "string")

    def edit(m: dict[str, Any]) -> None:
        m["inputs"][numeric]["encoding"] = {"kind": "one_hot", "categories": ["a"]}

    with pytest.raises(runtime.BundleError, match=rf"inputs\[{numeric}\]\.encoding .*for a string feature"):
        runtime.load(rewrite(encoded_bundle, tmp_path / "numeric.edgepkg", edit=edit))


def test_row_and_batch_encodings_that_disagree_fail_the_self_test(encoded_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-row path encodes through a lookup table, batches through numpy: a load that
    finds them apart on a golden row refuses the bundle instead of answering two ways."""
    from runtime.encodings import Encoding

    runtime.load(encoded_bundle)  # agrees as built
    real = Encoding.table

    def shifted(self: Encoding) -> Any:
        hot, zeros = real(self)
        return {c: hot[self.categories[(k + 1) % self.width]] for k, c in enumerate(self.categories)}, zeros

    monkeypatch.setattr(Encoding, "table", shifted)
    with pytest.raises(runtime.SelfTestError, match="encoded inputs are fed two ways: row 0"):
        runtime.load(encoded_bundle)


def test_encode_strings_off_builds_a_bundle_older_runtimes_load(tmp_path: Path) -> None:
    """``BuildOptions(encode_strings=False)``: the strings stay graph inputs and no manifest
    entry has ``encoding`` (what a device that has not been upgraded can load)."""
    from packager import BuildOptions
    from packager.artifacts import sklearn_artifacts
    from packager.build import write_artifacts
    from packager.registry import LoadedModel
    from tests.packager.test_families import _RESOLVED

    X, y = _fields()
    model = _fit(_pipeline(_forest()), X, y)
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=X.head(5), signature_columns=None)
    built = {}
    for encode in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = sklearn_artifacts(loaded, X, BuildOptions(encode_strings=encode))
        built[encode] = art
        write_artifacts(art, tmp_path / f"{encode}.edgepkg", _RESOLVED, "sklearn")  # loads and self-tests
    assert [s["dtype"] for s in built[True].converted.onnx_inputs] == ["float64"] or [
        s["dtype"] for s in built[True].converted.onnx_inputs
    ] == ["float32"]
    assert "string" in [s["dtype"] for s in built[False].converted.onnx_inputs]
    assert not any("encoding" in entry for entry in built[False].inputs)
    assert {entry["name"] for entry in built[True].inputs if "encoding" in entry} == set(STRINGS)
    rows = _rows(_missing_strings(_hostile(X)))
    on, off = runtime.load(tmp_path / "True.edgepkg"), runtime.load(tmp_path / "False.edgepkg")
    assert [on.predict(r) for r in rows] == [off.predict(r) for r in rows]
