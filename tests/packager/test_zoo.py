"""The model zoo (tests/packager/zoo.py): every case builds and agrees with its original on
held-out rows the parity gate never saw, or is refused with a message naming the step.

A representative slice runs in CI; the whole catalogue runs with ``-m zoo`` (deselected by
default in pyproject.toml): ``python -m pytest tests/packager/test_zoo.py -m zoo -n 0``.
XGBoost and LightGBM in each MLflow flavor: test_boosting_flavors.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.packager import zoo

SLICE = {
    "LogisticRegression",
    "RandomForestRegressor",
    "HistGradientBoostingClassifier",
    "LinearSVC",
    "RidgeClassifier",
    "Perceptron",
    "KNeighborsClassifier",
    "CalibratedClassifierCV",
    "StackingClassifier",
    "VotingClassifier",
    "BaggingRegressor",
    "AdaBoostClassifier",
    "OneVsRestClassifier",
    "LassoCV",
    "PoissonRegressor",
    "GaussianNB",
    "SVC",
    "DummyClassifier",
    "TransformedTargetRegressor",
    "TransformedTargetRegressor(log)",
    "QuadraticDiscriminantAnalysis",
    "RadiusNeighborsClassifier",
    "GridSearchCV(scale -> LogisticRegression)",
    "columns[PCA] -> LogisticRegression",
    "columns[KBinsDiscretizer-ordinal] -> Ridge",
    "columns[QuantileTransformer] -> Ridge",
    "columns[scale, OrdinalEncoder(unknown=-1)] -> RandomForest",
    "columns[scale, onehot] -> SGDClassifier(hinge) (label-only)",
    "XGBClassifier",
    "columns[impute, scale, onehot] -> LGBMRegressor",
}

_ALL = zoo.all_cases()


def _check(case: zoo.Case, tmp_path: Path) -> zoo.Outcome:
    outcome = zoo.run_case(case, tmp_path, direct=False)
    assert outcome.status != "disagrees", f"{case.id}: the bundle answers differently from the original: {outcome.detail}"
    assert outcome.status != "crashed", f"{case.id}: edgepack failed with an unexpected {outcome.error}: {outcome.detail}"
    if outcome.status == "refused":
        # A clear refusal names the step: its path inside the model, or the class of a bare estimator.
        model, *_ = zoo._fit(case)
        from packager.steps import walk_all

        names = {type(s.obj).__name__ for s in walk_all(model)} | {f"'{s.path}'" for s in walk_all(model) if s.path}
        assert any(n in outcome.detail for n in names), f"{case.id}: refusal names no step: {outcome.detail}"
        assert outcome.error in ("UnsupportedModelError", "ConversionError", "ParityError"), outcome.error
    return outcome


@pytest.mark.parametrize("case", [c for c in _ALL if c.id in SLICE], ids=lambda c: c.id)
def test_zoo_slice_builds_and_agrees_or_is_refused_naming_the_step(case: zoo.Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


@pytest.mark.zoo
@pytest.mark.parametrize("case", _ALL, ids=lambda c: c.id)
def test_zoo_builds_and_agrees_or_is_refused_naming_the_step(case: zoo.Case, tmp_path: Path) -> None:
    _check(case, tmp_path)


def test_what_the_issue_names_builds(tmp_path: Path) -> None:
    """Label-only classifiers, the meta-estimators and preprocessing steps the issue lists: they build."""
    wanted = {
        "LinearSVC", "RidgeClassifier", "Perceptron", "PassiveAggressiveClassifier", "LogisticRegressionCV", "RidgeCV",
        "CalibratedClassifierCV", "BaggingClassifier", "AdaBoostRegressor", "StackingRegressor", "VotingRegressor",
        "OneVsRestClassifier", "columns[TruncatedSVD] -> Ridge", "columns[PolynomialFeatures] -> LogisticRegression",
        "columns[PowerTransformer] -> Ridge", "columns[MaxAbsScaler] -> Ridge", "columns[Normalizer] -> LogisticRegression",
        "columns[VarianceThreshold] -> Ridge", "columns[SelectKBest] -> LogisticRegression",
    }
    cases = [c for c in _ALL if c.id in wanted]
    assert len(cases) == len(wanted)
    outcomes = [zoo.run_case(c, tmp_path, direct=False) for c in cases]
    assert {o.case: o.status for o in outcomes} == {c: "builds" for c in wanted}
    label_only = {o.case for o in outcomes if o.label_only}
    assert label_only == {"LinearSVC", "RidgeClassifier", "Perceptron", "PassiveAggressiveClassifier"}


# ---------------------------------------------------------------------------------------
# label-only bundles on the device side


def test_label_only_bundle_says_so_and_results_have_no_probabilities(tmp_path: Path) -> None:
    import runtime
    from packager import BuildOptions
    from packager.artifacts import sklearn_artifacts
    from packager.build import write_artifacts
    from packager.registry import LoadedModel, ResolvedModel
    from sklearn.svm import LinearSVC

    train, y, ref, held = zoo.frames("numeric", "classification")
    model = LinearSVC().fit(train, y)
    art = sklearn_artifacts(LoadedModel(flavor="sklearn", model=model, input_example=train.head(5), signature_columns=None), ref, BuildOptions())
    resolved = ResolvedModel(name="svc", version="1", run_id=None, requested_uri="models:/svc/1", kind="version", value="1",
                             registry_uri="(none)", created_at=None, tracking_uri="(none)")
    path = tmp_path / "svc.edgepkg"
    write_artifacts(art, path, resolved, "sklearn")
    bundle = runtime.load(path)
    outputs = bundle.manifest["outputs"]
    assert outputs["label_only"] is True and outputs["probabilities"] is None and outputs["classes"] == sorted(set(y))
    assert bundle.manifest["onnx"]["converters"] == [{"step": "", "estimator": "sklearn.svm._classes.LinearSVC", "converter": "skl2onnx:SklearnLinearSVC"}]
    one = bundle.predict(held.iloc[0].to_dict())
    assert set(one) == {"prediction", "flags"} and one["prediction"] == model.predict(held.head(1))[0]
    many = bundle.predict([held.iloc[i].to_dict() for i in range(5)])
    assert all(set(r) == {"prediction", "flags"} for r in many)
    batch = bundle.predict_batch({c: held[c].to_numpy() for c in held.columns})
    assert "probabilities" not in batch and batch["prediction"].tolist() == model.predict(held).tolist()

    class Sink:  # the runtime's telemetry protocol: an object with record(...)
        def __init__(self) -> None:
            self.outputs: list[dict[str, Any]] = []

        def record(self, **fields: Any) -> None:
            self.outputs.append(fields["outputs"])

    sink = Sink()
    runtime.load(path, telemetry=sink).predict(held.iloc[0].to_dict())
    assert sink.outputs == [{"prediction": one["prediction"]}]


def test_conversion_failure_has_its_own_exit_code_and_names_the_step(tracking_uri: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import SplineTransformer

    from edgepack.cli import cli
    from tests.support.registry import register_model

    train, y, _ref, _held = zoo.frames("numeric", "classification")
    model = Pipeline([("pre", ColumnTransformer([("spline", SplineTransformer(n_knots=3), ["p"])], remainder="passthrough")), ("clf", LogisticRegression(max_iter=300))]).fit(train, y)
    # Pickled (and trusted) so that the build reaches conversion: skops would first ask to trust scipy's BSpline.
    register_model(tracking_uri, "splines", model, train, serialization="pickle")
    result = CliRunner().invoke(cli, ["build", "models:/splines/1", "-o", str(tmp_path / "s.edgepkg"), "--tracking-uri", tracking_uri, "--trust-pickle"])
    assert result.exit_code == 7, result.output
    assert "step 'pre/spline'" in result.output and "SplineTransformer" in result.output and "Traceback" not in result.output
    help_text = CliRunner().invoke(cli, ["build", "--help"]).output
    assert "7  conversion" in help_text and "3  parity" in help_text
