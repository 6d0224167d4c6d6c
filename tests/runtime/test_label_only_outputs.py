"""Label-only classifiers in the output contract: results without probabilities, and a
manifest that contradicts itself is refused."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import BundleError
from runtime.outputs import OutputSpec

SESSION = {"label": ("tensor(int64)", [None])}


def _spec(**outputs: object) -> OutputSpec:
    base = {"task": "classification", "classes": [3, 5, 7], "label_values": [3, 5, 7], "label": "label", "probabilities": None, "label_only": True}
    return OutputSpec({"outputs": {**base, **outputs}}, SESSION)


def test_label_only_results_carry_labels_and_no_probabilities() -> None:
    spec = _spec()
    assert spec.names == ["label"] and spec.label_only
    labels = np.asarray([7, 3, 5], dtype=np.int64)
    assert spec.first([labels[:1]], []) == {"prediction": 7, "flags": []}
    assert spec.rows([labels], [[], ["x"], []]) == [
        {"prediction": 7, "flags": []},
        {"prediction": 3, "flags": ["x"]},
        {"prediction": 5, "flags": []},
    ]
    arrays = spec.arrays([labels.reshape(3, 1)], {})  # some converters give (N, 1) labels
    assert set(arrays) == {"prediction", "flags"} and arrays["prediction"].tolist() == [7, 3, 5]
    assert spec.outputs_of({"prediction": 7, "flags": []}) == {"prediction": 7}


def test_a_label_outside_the_manifest_is_still_an_error() -> None:
    from runtime.errors import PredictionError

    with pytest.raises(PredictionError, match="label 4"):
        _spec().rows([np.asarray([4], dtype=np.int64)], [[]])


@pytest.mark.parametrize("bad", [{"label_only": True, "probabilities": "probabilities"}, {"label_only": "yes"}])
def test_a_contradictory_label_only_manifest_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(BundleError, match="label_only"):
        _spec(**bad)
