"""Shared test fixtures: a real MLflow registry on SQLite, and real bundles built from it.

Nothing here is mocked: models are trained on small data, logged with ``mlflow.sklearn``
into a SQLite registry under a temporary directory, and bundles are built from that
registry by ``packager.build_bundle``.

Fixtures and helpers
--------------------
``tracking_uri`` (function scope)
    A fresh, empty registry ``sqlite:///<tmp_path>/mlflow.db`` (artifacts under
    ``<tmp_path>/artifacts``). ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` point at it,
    and ``MLFLOW_EXPERIMENT_NAME`` names an experiment whose artifacts live in ``tmp_path``
    (MLflow's Default experiment would write under the working directory), for the duration
    of the test; all are restored afterwards.

``register_model(tracking_uri, name, model, X, *, alias=None, stage=None, serialization="skops") -> str``
    Log a FITTED sklearn model with ``X.head(5)`` as input example (the signature is inferred
    from it), register it under ``name`` and return the new version as a string. ``alias``
    sets a registered-model alias on the new version; ``stage`` transitions it to a stage
    (e.g. ``"Production"``); ``serialization`` is ``"skops"`` (MLflow 3's default) or
    ``"pickle"``. ``skops_trusted_types`` defaults to the types the model holds that skops
    does not trust by default (MLflow refuses to log it otherwise).

``mlflow_pointed_at(tracking_uri)`` / ``experiment_for(tracking_uri)``
    A context manager pointing mlflow's process-wide URIs at a registry (restored after), and
    the id of the experiment the helpers log into; for logging other flavors by hand.

``make_bundle`` (session scope)
    A factory ``make_bundle(kind) -> BuiltBundle`` building (once per session, cached) a
    real bundle from a session-wide registry. Kinds:

    - ``"binary"``: a fire-risk binary classifier (int labels 0/1), a Pipeline with a
      ColumnTransformer over numeric columns ``"temp c"``, ``"humidity %"``, ``"wind.speed"``
      (SimpleImputer + StandardScaler; NaN allowed) and the string column ``"region"``
      (OneHotEncoder(handle_unknown="ignore")), LogisticRegression. Registry alias
      ``champion``, built from ``models:/fire-risk@champion``.
    - ``"multiclass"``: iris with string labels (``"setosa"``, ``"versicolor"``,
      ``"virginica"``), column names with spaces and parentheses, StandardScaler +
      LogisticRegression, built from ``models:/iris-species/Production`` (a stage).
    - ``"regression"``: a RandomForestRegressor (few trees) on four numeric columns, one with
      a leading digit in its name, built from ``models:/yield/1``.
    - ``"signed"``: the binary model again, signed with a fresh Ed25519 key pair
      (``private_key`` / ``public_key`` set on the result).

    ``BuiltBundle`` holds: ``kind``, ``path`` (the ``.edgepkg``), ``report`` (the
    ``packager.BuildReport``), ``model`` (the fitted sklearn object), ``frame`` (a pandas
    DataFrame of feature rows the model was trained on), ``tracking_uri``, ``private_key``
    and ``public_key`` (paths, or ``None`` when unsigned).

``fire_risk_bundle`` (session scope)
    Shortcut for ``make_bundle("binary").path``.

``signed_bundle`` (session scope)
    Shortcut for ``make_bundle("signed")`` (use ``.path``, ``.public_key``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_EXPERIMENT = "edgepack-tests"


def _db_path(tracking_uri: str) -> Path:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        raise ValueError(f"expected a sqlite:/// tracking URI, got {tracking_uri!r}")
    return Path(tracking_uri[len(prefix) :])


@contextlib.contextmanager
def mlflow_pointed_at(tracking_uri: str) -> Iterator[Any]:
    """Point mlflow's process-wide tracking/registry URIs at ``tracking_uri`` for a block,
    then put back exactly what was there (the explicit URIs and the environment)."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in _ENV_KEYS}
    # MLflow keeps "set explicitly" apart from "from the environment" only in these globals;
    # set_tracking_uri("") would mean ./mlruns, not "unset".
    tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(tracking)
        registry_utils._registry_uri = registry
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_for(tracking_uri: str) -> str:
    """The id of the experiment tests log into, its artifacts next to the registry database."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(_EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifacts = _db_path(tracking_uri).resolve().parent / "artifacts"
    return str(client.create_experiment(_EXPERIMENT, artifact_location=artifacts.as_uri()))


def register_model(
    tracking_uri: str,
    name: str,
    model: Any,
    X: Any,
    *,
    alias: str | None = None,
    stage: str | None = None,
    serialization: str = "skops",
    skops_trusted_types: list[str] | None = None,
) -> str:
    """Log and register a fitted sklearn ``model``; return the new version number as a string."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    if serialization == "skops" and skops_trusted_types is None:
        # MLflow refuses to log a skops model whose types are not all trusted (OneHotEncoder's
        # dtype=np.float64 is one); the tests log their own models, so trust what they hold.
        import skops.io

        skops_trusted_types = skops.io.get_untrusted_types(data=skops.io.dumps(model)) or None
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = experiment_for(tracking_uri)
    with mlflow_pointed_at(tracking_uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=X.head(5),
                registered_model_name=name,
                serialization_format=serialization,
                skops_trusted_types=skops_trusted_types,
                # Skips pip-requirement inference, which spawns a subprocess (~7 s per model).
                pip_requirements=["scikit-learn"],
            )
        version = str(info.registered_model_version)
        if alias is not None:
            client.set_registered_model_alias(name, alias, version)
        if stage is not None:
            client.transition_model_version_stage(name, version, stage)
    return version


@pytest.fixture(scope="session")
def _empty_registry_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow database, created once and copied per test (migrations are slow)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("registry-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, _empty_registry_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_registry_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    # The Default experiment stores artifacts under the working directory; runs started
    # without an experiment go to one whose artifacts live in tmp_path instead.
    experiment_for(uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", _EXPERIMENT)
    yield uri


# ---------------------------------------------------------------------------------------
# Real bundles, built once per session.


@dataclass(frozen=True, kw_only=True)
class BuiltBundle:
    kind: str
    """One of ``binary``, ``multiclass``, ``regression``, ``signed``."""
    path: Path
    """The ``.edgepkg`` file."""
    report: Any
    """The ``packager.BuildReport`` of the build."""
    model: Any
    """The fitted sklearn model that was registered."""
    frame: Any
    """pandas DataFrame of feature rows (the training rows)."""
    tracking_uri: str
    """The session registry the bundle was built from."""
    private_key: Path | None = None
    """Signing key (``signed`` only)."""
    public_key: Path | None = None
    """Public key to verify with (``signed`` only)."""


def fire_risk_data(rows: int = 240, seed: int = 7) -> tuple[Any, Any]:
    """Features (numeric with some NaN, plus a string column) and 0/1 labels."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    temp = rng.normal(22, 7, rows)
    humidity = rng.uniform(5, 95, rows)
    wind = rng.gamma(2.0, 4.0, rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    score = 0.25 * (temp - 22) - 0.05 * (humidity - 50) + 0.15 * wind + (region == "south") * 1.2
    y = (score + rng.normal(0, 1, rows) > 0.5).astype(int)
    X = pd.DataFrame({"temp c": temp, "humidity %": humidity, "wind.speed": wind, "region": region})
    X.loc[rng.choice(rows, 12, replace=False), "humidity %"] = np.nan
    return X, y


def fire_risk_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    pre = ColumnTransformer(
        [
            ("num", numeric, ["temp c", "humidity %", "wind.speed"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])


def _iris() -> tuple[Any, Any]:
    import numpy as np
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    names = np.asarray(data.target_names)
    return data.data, names[data.target.to_numpy()]


def _yield_data(rows: int = 200, seed: int = 3) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "1st rain mm": rng.uniform(0, 50, rows),
            "soil.ph": rng.uniform(5, 8, rows),
            "sun hours": rng.uniform(2, 12, rows),
            "n_kg": rng.uniform(0, 200, rows),
        }
    )
    y = 2.0 * X["1st rain mm"] - 4 * (X["soil.ph"] - 6.5) ** 2 + 3 * X["sun hours"] + 0.05 * X["n_kg"]
    return X, y.to_numpy() + rng.normal(0, 1, rows)


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory, _empty_registry_db: Path) -> Callable[[str], BuiltBundle]:
    from runtime.signing import generate_keypair

    root = tmp_path_factory.mktemp("bundles")
    db = root / "mlflow.db"
    shutil.copyfile(_empty_registry_db, db)
    uri = f"sqlite:///{db}"
    cache: dict[str, BuiltBundle] = {}

    def build(kind: str) -> BuiltBundle:
        if kind in cache:
            return cache[kind]
        from packager import build_bundle
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        private_key = public_key = None
        if kind == "binary":
            X, y = fire_risk_data()
            model = fire_risk_pipeline().fit(X, y)
            register_model(uri, "fire-risk", model, X, alias="champion")
            model_uri = "models:/fire-risk@champion"
        elif kind == "signed":
            base = build("binary")
            model, X = base.model, base.frame
            private_key, public_key = generate_keypair(root / "keys")
            model_uri = "models:/fire-risk@champion"
        elif kind == "multiclass":
            X, y = _iris()
            model = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
            register_model(uri, "iris-species", model, X, stage="Production")
            model_uri = "models:/iris-species/Production"
        elif kind == "regression":
            X, y = _yield_data()
            model = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(X, y)
            version = register_model(uri, "yield", model, X)
            model_uri = f"models:/yield/{version}"
        else:
            raise ValueError(f"unknown bundle kind {kind!r}; expected binary, multiclass, regression or signed")
        out = root / f"{kind}.edgepkg"
        report = build_bundle(model_uri, out, tracking_uri=uri, signing_key=private_key)
        cache[kind] = BuiltBundle(
            kind=kind,
            path=out,
            report=report,
            model=model,
            frame=X,
            tracking_uri=uri,
            private_key=private_key,
            public_key=public_key,
        )
        return cache[kind]

    return build


@pytest.fixture(scope="session")
def fire_risk_bundle(make_bundle: Callable[[str], BuiltBundle]) -> Path:
    return make_bundle("binary").path


@pytest.fixture(scope="session")
def signed_bundle(make_bundle: Callable[[str], BuiltBundle]) -> BuiltBundle:
    return make_bundle("signed")
