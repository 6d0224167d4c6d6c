"""The model zoo: scikit-learn's own catalogue (``all_estimators``), production-style
pipelines and XGBoost/LightGBM, each built by edgepack and checked against the original
on held-out rows the parity gate never saw.

Each case ends in one outcome:

- ``builds``: the bundle loads on the device side (``runtime.load``) and answers like the
  original on the held-out rows, within the gate's tolerance;
- ``disagrees``: a bundle was written but answers differently on a held-out row (the one
  outcome that must never happen);
- ``refuses rows``: the bundle answers like the original on the rows it accepts, but the
  device refuses (``InputError``) held-out rows with missing values the gate could not
  prove safe: a clear refusal, never a different answer;
- ``refused``: edgepack refused with a ``PackagerError`` (its class and message kept);
- ``not applicable``: the estimator does not fit this kind of data (multi-output only, a
  single feature only, ...): not counted.

``direct`` says whether skl2onnx (with onnxmltools' converters registered) alone converts
the model and reproduces it on the held-out rows (labels equal, values within 1e-3), the
baseline of the issue's "at least 95% of what the converters reproduce" target.

``python -m tests.packager.zoo docs/models.md`` runs the whole zoo and writes the table.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["temp c", "wind.speed", "1st reading", "p", "rain_mm_7d", "elev"]


@dataclass(frozen=True)
class Case:
    """One model of the zoo."""

    id: str
    """Stable name (the estimator class, or the pipeline's description)."""
    task: str
    """``classification`` or ``regression``."""
    make: Callable[[], Any]
    """Returns the unfitted model."""
    data: str = "numeric"
    """``numeric``, ``counts`` (small non-negative integers) or ``mixed`` (numeric and string columns, some NaN)."""
    group: str = "catalogue"
    """``catalogue``, ``pipeline`` or ``boosting``."""


@dataclass
class Outcome:
    """What happened to one case."""

    case: str
    group: str
    status: str
    """``builds``, ``disagrees``, ``refused``, ``crashed`` (an unexpected error: a bug) or ``not applicable``."""
    detail: str = ""
    """The refusal's message, the disagreement, or why not applicable."""
    error: str = ""
    """The refusal's error class."""
    direct: bool | None = None
    """skl2onnx/onnxmltools alone convert and reproduce it (None: not tried)."""
    label_only: bool = False
    precision: str = ""
    converters: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------
# data


def frames(kind: str, task: str, seed: int = 0) -> tuple[pd.DataFrame, Any, pd.DataFrame, pd.DataFrame]:
    """``(train, y, reference, held_out)``: the gate sees ``reference``, never ``held_out``."""
    from sklearn.datasets import make_classification, make_regression

    n = 420
    if task == "classification":
        classes = 2 if kind == "binary" else 3
        X, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_redundant=0, n_classes=classes, random_state=seed)
    else:
        X, y = make_regression(n_samples=n, n_features=6, n_informative=4, noise=5.0, random_state=seed)
        y = (y - y.min()) / (y.max() - y.min()) * 20 + 1  # positive: Poisson/Gamma/Tweedie need it
    X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0)) * 10  # non-negative for the NB family
    if kind == "counts":
        X = np.round(X) % 3  # three values per column, all of them in the training rows
    frame = pd.DataFrame(X, columns=COLUMNS)
    if kind.startswith("mixed"):
        rng = np.random.default_rng(seed)
        frame["region"] = np.where(frame["p"] > 5, "north", np.where(frame["elev"] > 5, "south", "east"))
        frame["soil"] = rng.choice(["clay", "sand", "loam"], n)
        frame.loc[rng.choice(n, n // 12, replace=False), "rain_mm_7d"] = np.nan
    if task == "classification" and not kind.endswith("ints"):
        y = np.asarray(["low", "medium", "high"], dtype=object)[y]
    train, ref, held = frame.iloc[:260], frame.iloc[260:340], frame.iloc[340:]
    return train.reset_index(drop=True), y[:260], ref.reset_index(drop=True), held.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# the catalogue


def _catalogue_overrides() -> dict[str, Callable[[], Any]]:
    """Constructor arguments for estimators that need them (or would be slow on defaults)."""
    from sklearn import ensemble, linear_model, neighbors, neural_network, svm, tree
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def lr() -> Any:
        return LogisticRegression(max_iter=500)

    return {
        "AdaBoostClassifier": lambda: ensemble.AdaBoostClassifier(n_estimators=5, random_state=0),
        "AdaBoostRegressor": lambda: ensemble.AdaBoostRegressor(n_estimators=5, random_state=0),
        "BaggingClassifier": lambda: ensemble.BaggingClassifier(DecisionTreeClassifier(max_depth=3), n_estimators=4, random_state=0),
        "BaggingRegressor": lambda: ensemble.BaggingRegressor(DecisionTreeRegressor(max_depth=3), n_estimators=4, random_state=0),
        "CalibratedClassifierCV": lambda: __import__("sklearn.calibration", fromlist=["x"]).CalibratedClassifierCV(svm.LinearSVC(), cv=3),
        "ClassifierChain": None,
        "RegressorChain": None,
        "ExtraTreesClassifier": lambda: ensemble.ExtraTreesClassifier(n_estimators=5, max_depth=5, random_state=0),
        "ExtraTreesRegressor": lambda: ensemble.ExtraTreesRegressor(n_estimators=5, max_depth=5, random_state=0),
        "RandomForestClassifier": lambda: ensemble.RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0),
        "RandomForestRegressor": lambda: ensemble.RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0),
        "GradientBoostingClassifier": lambda: ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
        "GradientBoostingRegressor": lambda: ensemble.GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0),
        "HistGradientBoostingClassifier": lambda: ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0),
        "HistGradientBoostingRegressor": lambda: ensemble.HistGradientBoostingRegressor(max_iter=10, random_state=0),
        "DecisionTreeClassifier": lambda: tree.DecisionTreeClassifier(max_depth=5, random_state=0),
        "DecisionTreeRegressor": lambda: tree.DecisionTreeRegressor(max_depth=5, random_state=0),
        "ExtraTreeClassifier": lambda: tree.ExtraTreeClassifier(max_depth=5, random_state=0),
        "ExtraTreeRegressor": lambda: tree.ExtraTreeRegressor(max_depth=5, random_state=0),
        "FixedThresholdClassifier": lambda: __import__("sklearn.model_selection", fromlist=["x"]).FixedThresholdClassifier(lr()),
        "TunedThresholdClassifierCV": lambda: __import__("sklearn.model_selection", fromlist=["x"]).TunedThresholdClassifierCV(lr(), cv=3),
        "MLPClassifier": lambda: neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        "MLPRegressor": lambda: neural_network.MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        "MultiOutputClassifier": None,
        "MultiOutputRegressor": None,
        "MultiTaskElasticNet": None,
        "MultiTaskElasticNetCV": None,
        "MultiTaskLasso": None,
        "MultiTaskLassoCV": None,
        "PLSCanonical": None,
        "CCA": None,
        "IsotonicRegression": None,
        "LabelPropagation": lambda: __import__("sklearn.semi_supervised", fromlist=["x"]).LabelPropagation(max_iter=200),
        "LogisticRegression": lr,
        "LogisticRegressionCV": lambda: linear_model.LogisticRegressionCV(cv=3, max_iter=500),
        "OneVsOneClassifier": lambda: __import__("sklearn.multiclass", fromlist=["x"]).OneVsOneClassifier(lr()),
        "OneVsRestClassifier": lambda: __import__("sklearn.multiclass", fromlist=["x"]).OneVsRestClassifier(lr()),
        "OutputCodeClassifier": lambda: __import__("sklearn.multiclass", fromlist=["x"]).OutputCodeClassifier(lr(), random_state=0),
        "RadiusNeighborsClassifier": lambda: neighbors.RadiusNeighborsClassifier(radius=8.0),
        "RadiusNeighborsRegressor": lambda: neighbors.RadiusNeighborsRegressor(radius=8.0),
        "SelfTrainingClassifier": lambda: __import__("sklearn.semi_supervised", fromlist=["x"]).SelfTrainingClassifier(lr()),
        "StackingClassifier": lambda: ensemble.StackingClassifier(
            [("lr", lr()), ("tree", DecisionTreeClassifier(max_depth=3, random_state=0))], final_estimator=lr(), cv=3
        ),
        "StackingRegressor": lambda: ensemble.StackingRegressor(
            [("ridge", Ridge()), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))], final_estimator=Ridge(), cv=3
        ),
        "VotingClassifier": lambda: ensemble.VotingClassifier(
            [("lr", lr()), ("tree", DecisionTreeClassifier(max_depth=3, random_state=0))], voting="soft"
        ),
        "VotingRegressor": lambda: ensemble.VotingRegressor([("ridge", Ridge()), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))]),
        "TransformedTargetRegressor": lambda: __import__("sklearn.compose", fromlist=["x"]).TransformedTargetRegressor(
            regressor=LinearRegression(), transformer=StandardScaler()
        ),
        "TransformedTargetRegressor(log)": lambda: __import__("sklearn.compose", fromlist=["x"]).TransformedTargetRegressor(
            regressor=Ridge(), func=np.log, inverse_func=np.exp
        ),
        "SVC": lambda: svm.SVC(probability=True, random_state=0),
        "NuSVC": lambda: svm.NuSVC(nu=0.3),
        "GaussianProcessClassifier": lambda: __import__("sklearn.gaussian_process", fromlist=["x"]).GaussianProcessClassifier(random_state=0),
        "QuantileRegressor": lambda: linear_model.QuantileRegressor(alpha=0.0),
        "TheilSenRegressor": lambda: linear_model.TheilSenRegressor(random_state=0, max_subpopulation=200),
        "RANSACRegressor": lambda: linear_model.RANSACRegressor(random_state=0),
        "SGDClassifier": lambda: linear_model.SGDClassifier(random_state=0),
        "SGDRegressor": lambda: linear_model.SGDRegressor(random_state=0),
        "Perceptron": lambda: linear_model.Perceptron(random_state=0),
        "PassiveAggressiveClassifier": lambda: linear_model.PassiveAggressiveClassifier(random_state=0),
        "PassiveAggressiveRegressor": lambda: linear_model.PassiveAggressiveRegressor(random_state=0),
    }


_NOT_APPLICABLE = {
    "ClassifierChain": "multi-label only (a 2-D target)",
    "RegressorChain": "multi-output only (a 2-D target)",
    "MultiOutputClassifier": "multi-output only (a 2-D target)",
    "MultiOutputRegressor": "multi-output only (a 2-D target)",
    "MultiTaskElasticNet": "multi-task only (a 2-D target)",
    "MultiTaskElasticNetCV": "multi-task only (a 2-D target)",
    "MultiTaskLasso": "multi-task only (a 2-D target)",
    "MultiTaskLassoCV": "multi-task only (a 2-D target)",
    "PLSCanonical": "a cross-decomposition with a 2-D target, not a predictor of one target",
    "CCA": "a cross-decomposition with a 2-D target, not a predictor of one target",
    "IsotonicRegression": "takes exactly one feature",
}


def catalogue() -> list[Case]:
    from sklearn.utils import all_estimators

    overrides = _catalogue_overrides()
    classifiers = {name for name, _ in all_estimators(type_filter="classifier")}
    cases = []
    for name, cls in all_estimators(type_filter=["classifier", "regressor"]):
        make = overrides.get(name) or cls
        task = "classification" if name in classifiers else "regression"
        data = {"CategoricalNB": "counts", "FixedThresholdClassifier": "binary", "TunedThresholdClassifierCV": "binary"}.get(name, "numeric")
        cases.append(Case(name, task, make, data=data))
    cases.append(Case("TransformedTargetRegressor(log)", "regression", overrides["TransformedTargetRegressor(log)"]))
    return cases


# ---------------------------------------------------------------------------------------
# production-style pipelines


def _columns(numeric: Any, *, cat: Any = None) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    return ColumnTransformer(
        [
            ("num", numeric, COLUMNS),
            ("cat", cat if cat is not None else OneHotEncoder(handle_unknown="ignore"), ["region", "soil"]),
        ]
    )


def pipelines() -> list[Case]:
    from sklearn import decomposition, feature_selection, linear_model, preprocessing, svm
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline

    def imputed(*steps: Any) -> Any:
        return make_pipeline(SimpleImputer(strategy="median"), *steps)

    def lr() -> Any:
        return linear_model.LogisticRegression(max_iter=500)

    def pipe(pre: Any, final: Any) -> Any:
        return Pipeline([("pre", pre), ("model", final)])

    c, r = "classification", "regression"
    prep = {
        "PCA": lambda: decomposition.PCA(n_components=4),
        "TruncatedSVD": lambda: decomposition.TruncatedSVD(n_components=3, random_state=0),
        "PolynomialFeatures": lambda: preprocessing.PolynomialFeatures(2),
        "QuantileTransformer": lambda: preprocessing.QuantileTransformer(n_quantiles=50),
        "PowerTransformer": lambda: preprocessing.PowerTransformer(),
        "KBinsDiscretizer-ordinal": lambda: preprocessing.KBinsDiscretizer(n_bins=4, encode="ordinal", quantile_method="averaged_inverted_cdf"),
        "MaxAbsScaler": preprocessing.MaxAbsScaler,
        "Normalizer": preprocessing.Normalizer,
        "VarianceThreshold": feature_selection.VarianceThreshold,
        "SelectKBest": lambda: feature_selection.SelectKBest(k=4),
        "RobustScaler": preprocessing.RobustScaler,
    }
    cases = []
    for name, make in prep.items():
        cases.append(Case(f"columns[{name}] -> LogisticRegression", c, lambda make=make: pipe(_columns(imputed(make())), lr()), "mixed", "pipeline"))
        cases.append(Case(f"columns[{name}] -> Ridge", r, lambda make=make: pipe(_columns(imputed(make())), linear_model.Ridge()), "mixed", "pipeline"))
    ordinal_unknown = lambda: preprocessing.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)  # noqa: E731
    cases += [
        Case("columns[scale, OrdinalEncoder(unknown=-1)] -> RandomForest", c,
             lambda: pipe(_columns(imputed(preprocessing.StandardScaler()), cat=ordinal_unknown()), RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0)), "mixed", "pipeline"),
        Case("columns[scale, onehot] -> HistGradientBoosting", c,
             lambda: pipe(_columns(preprocessing.StandardScaler()), HistGradientBoostingClassifier(max_iter=10, random_state=0)), "mixed", "pipeline"),
        Case("columns[scale, onehot] -> LinearSVC (label-only)", c, lambda: pipe(_columns(imputed(preprocessing.StandardScaler())), svm.LinearSVC()), "mixed", "pipeline"),
        Case("columns[scale, onehot] -> RidgeClassifier (label-only)", c, lambda: pipe(_columns(imputed(preprocessing.StandardScaler())), linear_model.RidgeClassifier()), "mixed", "pipeline"),
        Case("columns[scale, onehot] -> SGDClassifier(hinge) (label-only)", c,
             lambda: pipe(_columns(imputed(preprocessing.StandardScaler())), linear_model.SGDClassifier(loss="hinge", random_state=0)), "mixed", "pipeline"),
        Case("columns[scale, onehot] -> RandomForestRegressor", r,
             lambda: pipe(_columns(imputed(preprocessing.StandardScaler())), RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0)), "mixed", "pipeline"),
        Case("columns[scale, most_frequent-imputed strings] -> LogisticRegression", c,
             lambda: pipe(_columns(imputed(preprocessing.StandardScaler()), cat=make_pipeline(SimpleImputer(strategy="most_frequent"), preprocessing.OneHotEncoder(handle_unknown="ignore"))), lr()),
             "mixed-nan-strings", "pipeline"),
        Case("GridSearchCV(scale -> LogisticRegression)", c,
             lambda: __import__("sklearn.model_selection", fromlist=["x"]).GridSearchCV(make_pipeline(preprocessing.StandardScaler(), lr()), {"logisticregression__C": [0.1, 1.0]}, cv=3)),
    ]
    return cases


# ---------------------------------------------------------------------------------------
# XGBoost and LightGBM


def boosting() -> list[Case]:
    """Bare and in pipelines; the registry flavors (sklearn, native, onnx) are in test_zoo.py."""
    from sklearn.preprocessing import StandardScaler

    cases = []
    for lib in ("xgboost", "lightgbm"):
        try:
            __import__(lib)
        except ImportError:
            continue
        for task in ("classification", "regression"):
            kind = "Classifier" if task == "classification" else "Regressor"

            def make(lib: str = lib, kind: str = kind) -> Any:
                if lib == "xgboost":
                    import xgboost

                    return getattr(xgboost, f"XGB{kind}")(n_estimators=8, max_depth=3)
                import lightgbm

                return getattr(lightgbm, f"LGBM{kind}")(n_estimators=8, num_leaves=7, verbose=-1)

            name = f"{'XGB' if lib == 'xgboost' else 'LGBM'}{kind}"
            # XGBoost classifiers take labels 0..K-1 only (users encode them first).
            ints = "ints" if lib == "xgboost" else ""
            cases.append(Case(name, task, make, data=f"numeric{ints}", group="boosting"))
            cases.append(
                Case(
                    f"columns[impute, scale, onehot] -> {name}",
                    task,
                    lambda make=make: __import__("sklearn.pipeline", fromlist=["x"]).Pipeline(
                        [("pre", _columns(__import__("sklearn.pipeline", fromlist=["x"]).make_pipeline(
                            __import__("sklearn.impute", fromlist=["x"]).SimpleImputer(strategy="median"), StandardScaler()))), ("model", make())]
                    ),
                    f"mixed{ints}",
                    "boosting",
                )
            )
    return cases


def all_cases() -> list[Case]:
    return catalogue() + pipelines() + boosting()


# ---------------------------------------------------------------------------------------
# running a case


def _fit(case: Case) -> tuple[Any, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    kind = case.data.replace("-nan-strings", "")
    train, y, ref, held = frames(kind, case.task)
    if case.data == "mixed-nan-strings":
        rng = np.random.default_rng(3)
        for frame in (train, ref, held):
            frame["soil"] = frame["soil"].astype(object)
            frame.loc[rng.choice(len(frame), len(frame) // 10, replace=False), "soil"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = case.make().fit(train, y)
    return model, train, ref, held


def _direct(model: Any, held: pd.DataFrame, classification: bool) -> bool:
    """skl2onnx (onnxmltools registered) alone: float32 matrix input, compared on held-out rows."""
    import onnxruntime as ort
    from skl2onnx import to_onnx

    from packager.converters import for_conversion, register_external_converters

    if not all(pd.api.types.is_numeric_dtype(held[c]) for c in held.columns):
        return False  # mixed frames need per-column inputs; edgepack's own business
    register_external_converters()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conv = for_conversion(model)
            from packager.convert import _classifier_options

            options = _classifier_options(conv) if classification else None
            onx = to_onnx(conv, held.to_numpy(np.float32)[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
            sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
            outs = sess.run(None, {sess.get_inputs()[0].name: held.to_numpy(np.float32)})
    except Exception:
        return False
    try:
        return _reproduces(model, held, classification, outs)
    except (TypeError, ValueError):  # ZipMap's dicts where the option did not reach, odd shapes
        return False


def _reproduces(model: Any, held: pd.DataFrame, classification: bool, outs: list[Any]) -> bool:
    if classification:
        labels = np.asarray(outs[0]).reshape(-1)
        expected = model.predict(held)
        if not all(str(a) == str(b) for a, b in zip(labels.tolist(), expected.tolist())):
            return False
        if hasattr(model, "predict_proba") and len(outs) > 1:
            return bool(np.allclose(np.asarray(outs[1], dtype=np.float64), model.predict_proba(held), atol=1e-3))
        return True
    return bool(np.allclose(np.asarray(outs[0], dtype=np.float64).reshape(-1), model.predict(held), atol=1e-3, rtol=1e-3))


def agreement(model: Any, bundle: Any, held: pd.DataFrame, tol: dict[str, float]) -> str:
    """'' when the bundle answers like ``model`` on ``held``, else what differs."""
    result = bundle.predict_batch({c: held[c].to_numpy() if held[c].dtype.kind in "fi" else held[c].astype(object).to_numpy() for c in held.columns})
    ok_abs, ok_rel = tol["abs"], tol["rel"]
    if bundle.classes is not None:
        expected = model.predict(held)
        bad = [i for i, (a, b) in enumerate(zip(expected.tolist(), result["prediction"].tolist())) if a != b]
        if bad:
            return f"{len(bad)} of {len(held)} held-out labels differ (row {bad[0]}: {expected[bad[0]]!r} vs {result['prediction'][bad[0]]!r})"
        if hasattr(model, "predict_proba"):
            want, got = model.predict_proba(held), result["probabilities"]
        else:
            if "probabilities" in result:
                return "a label-only classifier's bundle answers probabilities"
            return ""
    else:
        want, got = model.predict(held), result["prediction"]
    want, got = np.asarray(want, dtype=np.float64).reshape(len(held), -1), np.asarray(got, dtype=np.float64).reshape(len(held), -1)
    diff = np.abs(want - got)
    within = (diff <= ok_abs) | (diff <= ok_rel * np.abs(want))
    if not within.all():
        return f"{int((~within.all(axis=1)).sum())} of {len(held)} held-out rows differ beyond tolerance (max abs diff {diff.max():.3g})"
    return ""


def run_case(case: Case, workdir: Path, *, direct: bool = True) -> Outcome:
    import runtime
    from packager import BuildOptions
    from packager.artifacts import sklearn_artifacts
    from packager.build import write_artifacts
    from packager.errors import PackagerError
    from packager.registry import LoadedModel, ResolvedModel

    start = time.perf_counter()
    if case.id in _NOT_APPLICABLE:
        return Outcome(case.id, case.group, "not applicable", _NOT_APPLICABLE[case.id])
    try:
        model, train, ref, held = _fit(case)
    except Exception as exc:
        return Outcome(case.id, case.group, "not applicable", f"does not fit this data: {type(exc).__name__}: {exc}"[:300])
    classification = case.task == "classification"
    outcome = Outcome(case.id, case.group, "builds", direct=_direct(model, held, classification) if direct else None)
    resolved = ResolvedModel(
        name="zoo", version="1", run_id=None, requested_uri="models:/zoo/1", kind="version", value="1",
        registry_uri="(none)", created_at=None, tracking_uri="(none)",
    )
    loaded = LoadedModel(flavor="sklearn", model=model, input_example=train.head(5), signature_columns=None)
    path = workdir / f"{abs(hash(case.id))}.edgepkg"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            art = sklearn_artifacts(loaded, ref, BuildOptions())
            write_artifacts(art, path, resolved, "sklearn")
            bundle = runtime.load(path)
    except PackagerError as exc:
        outcome.status, outcome.error, outcome.detail = "refused", type(exc).__name__, str(exc)
        outcome.seconds = time.perf_counter() - start
        return outcome
    except Exception as exc:  # an edgepack bug: never a clear refusal
        outcome.status, outcome.error, outcome.detail = "crashed", type(exc).__name__, str(exc)
        return outcome
    outcome.label_only = art.label_only
    outcome.precision = art.converted.precision
    outcome.converters = ", ".join(sorted({c["converter"] for c in art.converters}))
    try:
        differs = agreement(model, bundle, held, art.parity["tolerance"])
    except runtime.InputError as exc:
        accepted = held.dropna().reset_index(drop=True)
        differs = agreement(model, bundle, accepted, art.parity["tolerance"]) if len(accepted) else ""
        if not differs:
            outcome.status, outcome.detail = "refuses rows", f"refuses held-out rows the original answers ({exc}); agrees on the complete rows"
    if differs:
        outcome.status, outcome.detail = "disagrees", differs
    outcome.seconds = time.perf_counter() - start
    path.unlink(missing_ok=True)
    return outcome


def run(cases: list[Case], *, direct: bool = True) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="edgepack-zoo-") as tmp:
        return [run_case(case, Path(tmp), direct=direct) for case in cases]


# ---------------------------------------------------------------------------------------
# docs/models.md


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kinds(refused: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in refused:
        counts[f"`{o.error}`"] = counts.get(f"`{o.error}`", 0) + 1
    return counts


def markdown(outcomes: list[Outcome], extra: list[Outcome] | None = None) -> str:
    import sklearn
    import skl2onnx

    every = outcomes + (extra or [])
    counted = [o for o in every if o.status != "not applicable"]
    built = [o for o in counted if o.status == "builds"]
    refused = [o for o in counted if o.status == "refused"]
    refusing_rows = [o for o in counted if o.status == "refuses rows"]
    disagree = [o for o in counted if o.status in ("disagrees", "crashed")]
    direct = [o for o in counted if o.direct]
    direct_built = [o for o in direct if o.status == "builds"]
    versions = [f"scikit-learn {sklearn.__version__}", f"skl2onnx {skl2onnx.__version__}"]
    for lib in ("onnxmltools", "xgboost", "lightgbm", "onnxruntime"):
        try:
            versions.append(f"{lib} {__import__(lib).__version__}")
        except ImportError:
            pass
    lines = [
        "# Which models build",
        "",
        "<!-- Generated by `python -m tests.packager.zoo docs/models.md` from a run of the whole zoo; do not edit by hand. -->",
        "",
        "edgepack converts every step that skl2onnx has a converter for, with onnxmltools' XGBoost and LightGBM",
        "converters registered, and lets the parity gate decide. It refuses up front only conversions known to",
        "be silently wrong in a way the gate cannot see. This page is the outcome of the model zoo",
        "(`tests/packager/zoo.py`): every classifier and regressor of scikit-learn's `all_estimators`, production-style",
        "pipelines and XGBoost/LightGBM, each built and then compared with the original on held-out rows the parity",
        "gate never saw.",
        "",
        f"Run with {', '.join(versions)}.",
        "",
        f"- {len(every)} models tried, {len(every) - len(counted)} not applicable (they do not fit one 2-D table and one target).",
        f"- **{len(built)} of {len(counted)} build** and agree with the original on the held-out rows; {len(refused)} are refused; "
        + (f"{len(refusing_rows)} build but refuse held-out rows with missing values the gate could not prove safe "
           f"({', '.join(o.case for o in refusing_rows)}); " if refusing_rows else "")
        + f"**{len(disagree)} disagree**.",
        f"- skl2onnx/onnxmltools alone (with edgepack's registrations: onnxmltools' converters and its "
        f"TransformedTargetRegressor converter; one float32 matrix input) convert and reproduce {len(direct)} of the "
        f"all-numeric models on the held-out rows; edgepack builds {len(direct_built)} of those "
        f"({(100 * len(direct_built) / len(direct)) if direct else 0:.0f}%)"
        + (f"; the others: {', '.join(sorted(o.case for o in direct if o.status != 'builds'))}." if len(direct_built) < len(direct) else "."),
        "- Refusals by kind: "
        + "; ".join(f"{kind} {n}" for kind, n in sorted(_kinds(refused).items()))
        + " (`UnsupportedModelError`: refused before converting; `ConversionError`: the converter failed or its graph "
        "does not run; `ParityError`: the graph runs but answers differently on reference rows).",
        "",
        "Run it yourself (a few minutes; the CI runs a slice of it):",
        "",
        "```text",
        "python -m pytest tests/packager/test_zoo.py -m zoo -n 0",
        "python -m tests.packager.zoo docs/models.md   # rewrites this page",
        "```",
        "",
        "## Refused up front, and why",
        "",
        "| refused | why | instead |",
        "| --- | --- | --- |",
        "| `SVC(probability=True)`, `NuSVC(probability=True)` | skl2onnx's Platt scaling differs from scikit-learn 1.9's | `probability=False` (label-only), `CalibratedClassifierCV(LinearSVC())`, LogisticRegression, a tree ensemble |",
        "| `OneHotEncoder` with infrequent categories (`min_frequency`, `max_categories`) and `handle_unknown=\"infrequent_if_exist\"` or `\"warn\"` | unknown categories encode differently, and no reference row can show it | `handle_unknown=\"ignore\"` without `min_frequency`/`max_categories` (without them, `infrequent_if_exist` and `warn` build as `ignore`) |",
        "| HistGradientBoosting with native categorical splits | skl2onnx ignores the categorical splits | encode categories in a ColumnTransformer, `categorical_features=None` |",
        "| `FunctionTransformer(func)` with a custom function | arbitrary Python cannot become ONNX | compute the feature in the data, or use a transformer that has a converter |",
        "| a step with no converter (the list below) | neither skl2onnx nor onnxmltools converts it | replace it, or register a converter with `skl2onnx.update_registered_converter` |",
        "",
        "`edgepack build` exits with code 7 for a refusal or a converter failure and with 3 when the converted model",
        "answers differently from the original (a parity failure); the message names the step. Label-only",
        "classifiers (no `predict_proba` in the original) build bundles whose manifest says `label_only: true` and",
        "whose results have no `probabilities`.",
        "",
        "## Outcome per model",
        "",
        "| model | group | outcome | converters (bundle precision) | reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    order = {"crashed": 0, "disagrees": 0, "refuses rows": 1, "refused": 1, "builds": 2, "not applicable": 3}
    for o in sorted(every, key=lambda o: (o.group, order[o.status], o.case)):
        status = o.status + (" (label-only)" if o.label_only else "")
        how = f"{o.converters} ({o.precision})" if o.status in ("builds", "disagrees", "refuses rows") else ""
        reason = f"{o.error}: {o.detail}" if o.error else o.detail
        lines.append(f"| `{o.case}` | {o.group} | {status} | {how} | {_short(reason)} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path("docs/models.md")
    outcomes = run(all_cases())
    extra: list[Outcome] = []
    try:
        from tests.packager.test_boosting_flavors import flavor_outcomes

        extra = flavor_outcomes()
    except ImportError:
        pass
    out.write_text(markdown(outcomes, extra))
    for o in outcomes + extra:
        print(f"{o.status:15} {o.case}  {_short(o.detail, 160)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
