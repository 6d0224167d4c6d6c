"""ModelSlot: verified swaps, failed swaps keep serving, schema changes refused, rollback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import runtime
from runtime import BundleError, RollbackError, SchemaChangeError, SelfTestError, SignatureError

from . import builder


def test_swap_and_rollback(fire: builder.Built, fire_v2: builder.Built, keys: tuple[Path, Path], good_row: dict) -> None:
    slot = runtime.ModelSlot(fire.path, public_key=keys[1], require_signature=True)
    before = slot.predict(good_row)
    assert slot.model.version == "1" and slot.previous is None
    new = slot.swap(fire_v2.path)
    assert new is slot.model and new.version == "2" and slot.previous.version == "1"  # type: ignore[union-attr]
    after = slot.predict(good_row)
    assert after == runtime.load(fire_v2.path).predict(good_row)
    assert after["probabilities"] != before["probabilities"]
    assert slot.rollback().version == "1"
    assert slot.predict(good_row) == before
    with pytest.raises(RollbackError, match="no previous model to roll back to"):
        slot.rollback()


def test_failed_swap_keeps_the_old_model_serving(tmp_path: Path, fire: builder.Built, good_row: dict) -> None:
    slot = runtime.ModelSlot(fire.path)
    served = slot.model
    expected = slot.predict(good_row)

    tampered = tmp_path / "tampered.edgepkg"
    tampered.write_bytes(builder.rezip(fire.path.read_bytes(), replace={"requirements.txt": b"x" * 35}))
    with pytest.raises(BundleError, match="requirements.txt: sha256 is"):
        slot.swap(tampered)

    def wrong(golden: dict) -> None:
        golden["outputs"]["label"] = [1 - v for v in golden["outputs"]["label"]]

    with pytest.raises(SelfTestError):
        slot.swap(builder.edit_golden(fire.path, tmp_path / "wrong.edgepkg", wrong))
    with pytest.raises(BundleError, match="cannot read bundle"):
        slot.swap(tmp_path / "missing.edgepkg")
    assert slot.model is served and slot.previous is None
    assert slot.predict(good_row) == expected


def test_swap_uses_the_slot_load_options(fire: builder.Built, levels: builder.Built, keys: tuple[Path, Path]) -> None:
    slot = runtime.ModelSlot(fire.path, public_key=keys[1], require_signature=True)
    with pytest.raises(SignatureError, match="not signed"):
        slot.swap(levels.path, allow_schema_change=True)
    assert slot.model.name == "fire-risk"


def test_schema_change_is_refused_unless_allowed(tmp_path: Path, fire: builder.Built, levels: builder.Built, burn: builder.Built, good_row: dict) -> None:
    slot = runtime.ModelSlot(fire.path)
    with pytest.raises(SchemaChangeError, match="bundle holds model 'risk-level' but this slot serves 'fire-risk'"):
        slot.swap(levels.path)
    renamed = builder.rewrite(burn.path, tmp_path / "same-name.edgepkg", edit=lambda m: m["model"].update(name="fire-risk"))
    # Same name and inputs, but a regressor: accepted (inputs are the schema callers rely on).
    assert slot.swap(renamed).task == "regression"
    slot.rollback()

    def rename_feature(manifest: dict) -> None:
        manifest["inputs"][0]["name"] = "temperature"

    def rename_golden(golden: dict) -> None:
        golden["inputs"]["temperature"] = golden["inputs"].pop("temp c")

    golden_renamed = builder.edit_golden(fire.path, tmp_path / "golden-renamed.edgepkg", rename_golden)
    other_inputs = builder.rewrite(golden_renamed, tmp_path / "other-inputs.edgepkg", edit=rename_feature)
    with pytest.raises(SchemaChangeError, match="takes inputs \\[temperature:float32, .*\\] but v1 takes \\[temp c:float32"):
        slot.swap(other_inputs)
    assert slot.model.name == "fire-risk" and slot.predict(good_row)["flags"] == []
    assert slot.swap(levels.path, allow_schema_change=True).name == "risk-level"
    assert slot.predict(good_row)["prediction"] in ("high", "low", "medium")


def test_predictions_keep_flowing_during_swaps(fire: builder.Built, fire_v2: builder.Built, good_row: dict) -> None:
    slot = runtime.ModelSlot(fire.path)
    v1 = runtime.load(fire.path).predict(good_row)
    v2 = runtime.load(fire_v2.path).predict(good_row)
    stop = threading.Event()
    seen: list[dict] = []
    errors: list[BaseException] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                seen.append(slot.predict(good_row))
            except BaseException as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(3):
        slot.swap(fire_v2.path)
        slot.rollback()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen and all(r in (v1, v2) for r in seen)


def test_in_flight_prediction_finishes_on_the_old_model(fire: builder.Built, fire_v2: builder.Built, good_row: dict) -> None:
    class Gate:
        """A telemetry sink that holds the first prediction inside predict() until released."""

        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()
            self.versions: list[str] = []

        def record(self, *, version: str, **_: object) -> None:
            self.versions.append(version)
            if len(self.versions) == 1:
                self.entered.set()
                assert self.release.wait(10)

    gate = Gate()
    slot = runtime.ModelSlot(fire.path, telemetry=gate)
    v1 = runtime.load(fire.path).predict(good_row)
    v2 = runtime.load(fire_v2.path).predict(good_row)
    assert v1 != v2
    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.append(slot.predict(good_row)))
    worker.start()
    assert gate.entered.wait(10)
    slot.swap(fire_v2.path)  # while the first prediction is still inside the old model
    after = slot.predict(good_row)
    gate.release.set()
    worker.join(10)
    assert results == [v1]
    assert after == v2
    assert gate.versions == ["1", "2"]
