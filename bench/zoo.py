"""The three benchmark models: trained here, registered in a temporary MLflow registry on SQLite,
and built into bundles with ``packager.build_bundle``."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXPERIMENT = "edgepack-bench"
ALIAS = "bench"


@dataclass(kw_only=True)
class ModelCase:
    """One trained, registered and (if the packager is there) bundled model."""

    name: str
    """Short case name used in the table: ``logreg``, ``forest`` or ``hgb``."""
    title: str
    """What the model is, in words."""
    task: str
    """``classification`` or ``regression``."""
    estimator: Any
    """The fitted scikit-learn object."""
    frame: pd.DataFrame
    """Feature rows (held out from training) used as benchmark inputs."""
    registered_name: str = ""
    """Name in the registry."""
    version: str = ""
    """Registry version."""
    bundle: Path | None = None
    """The built ``.edgepkg``, or ``None`` when the build failed or the packager is missing."""
    bundle_error: str | None = None
    """Why there is no bundle."""
    registry_error: str | None = None
    """Why the model could not be registered (pyfunc paths then report it)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Facts for the results file (columns, trees, bundle size ...)."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_name}/{self.version}"

    @property
    def alias_uri(self) -> str:
        """What the bundle is built from: the alias the benchmark sets on its version."""
        return f"models:/{self.registered_name}@{ALIAS}"

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c in self.frame.columns if pd.api.types.is_numeric_dtype(self.frame[c])]

    @property
    def string_columns(self) -> list[str]:
        return [c for c in self.frame.columns if not pd.api.types.is_numeric_dtype(self.frame[c])]


def _logreg(rows: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, Any, str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = ["temp c", "humidity %", "wind.speed", "pressure hpa", "rain mm", "soil moisture", "ndvi", "slope deg"]
    X = pd.DataFrame({n: rng.normal(loc=i * 3.0, scale=1.0 + i, size=rows) for i, n in enumerate(names)})
    score = X.to_numpy() @ rng.normal(size=len(names)) / 10
    y = (score + rng.normal(scale=0.5, size=rows) > np.median(score)).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return X, y, model, "StandardScaler + LogisticRegression, 8 numeric columns, binary"


FOREST_NUMERIC = 25
FOREST_CATEGORIES = {
    "site": ["north", "south", "east", "west", "central"],
    "vendor": ["acme", "globex", "initech"],
    "shift": ["day", "night"],
    "soil type": ["clay", "sand", "loam", "silt"],
    "crop": ["wheat", "maize", "barley", "rye", "oats", "soy"],
    "season": ["winter", "spring", "summer", "autumn"],
}


def _forest(rows: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, Any, str]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns: dict[str, Any] = {f"sensor {i:02d}": rng.normal(i, 1.0 + i % 5, rows) for i in range(FOREST_NUMERIC)}
    for name, values in FOREST_CATEGORIES.items():
        columns[name] = rng.choice(values, rows).astype(object)
    X = pd.DataFrame(columns)
    numeric = [c for c in X.columns if c.startswith("sensor")]
    categorical = list(FOREST_CATEGORIES)
    score = X[numeric].to_numpy() @ rng.normal(size=len(numeric)) / 8 + (X["site"] == "south") * 1.5
    y = np.digitize(score + rng.normal(scale=0.7, size=rows), np.quantile(score, [1 / 3, 2 / 3]))
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = Pipeline([("pre", pre), ("forest", RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0, n_jobs=1))])
    return X, y, model, "ColumnTransformer (25 numeric: imputer + scaler; 6 categorical: one-hot) + RandomForest(100 trees), 3 classes"


def _hgb(rows: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, Any, str]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    names = [f"x{i}" for i in range(12)]
    X = pd.DataFrame({n: rng.uniform(-3, 3, rows) for n in names})
    y = np.sin(X["x0"]) * 3 + X["x1"] * X["x2"] + rng.normal(scale=0.3, size=rows)
    model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    return X, y.to_numpy(), model, "HistGradientBoostingRegressor(100 iterations), 12 numeric columns"


BUILDERS = {"logreg": _logreg, "forest": _forest, "hgb": _hgb}
TASKS = {"logreg": "classification", "forest": "classification", "hgb": "regression"}


def train(name: str, rows: int, *, seed: int = 0) -> ModelCase:
    """Train case ``name`` on ``rows`` rows; keep a held-out quarter (at least 10,000 rows are
    generated for it) as benchmark inputs."""
    rng = np.random.default_rng(seed)
    held_out = 10_000
    X, y, model, title = BUILDERS[name](rows + held_out, rng)
    train_X, train_y = X.iloc[:rows].reset_index(drop=True), y[:rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train_X, train_y)
    frame = X.iloc[rows:].reset_index(drop=True)
    details = {"title": title, "columns": int(X.shape[1]), "train_rows": rows}
    return ModelCase(name=name, title=title, task=TASKS[name], estimator=model, frame=frame, details=details)


class Registry:
    """A throwaway MLflow registry: ``sqlite:///<dir>/mlflow.db``, artifacts next to it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.uri = f"sqlite:///{directory / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        os.environ["MLFLOW_REGISTRY_URI"] = self.uri
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            self.experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(directory / "artifacts").as_uri())
        else:
            self.experiment_id = experiment.experiment_id

    def register(self, case: ModelCase) -> None:
        """Log ``case.estimator`` with ``mlflow.sklearn`` (MLflow's default serialization) and
        register it as ``bench-<case>``."""
        import mlflow
        import mlflow.sklearn

        import skops.io

        case.registered_name = f"bench-{case.name}"
        # The benchmark trained these models itself, so every type in them is trusted.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(case.estimator))
        with warnings.catch_warnings(), mlflow.start_run(experiment_id=self.experiment_id):
            warnings.simplefilter("ignore")
            info = mlflow.sklearn.log_model(
                case.estimator,
                name="model",
                input_example=case.frame.head(5),
                registered_model_name=case.registered_name,
                # Inferring requirements spawns a subprocess for several seconds; it adds nothing here.
                pip_requirements=["scikit-learn"],
                skops_trusted_types=trusted or None,
            )
        case.version = str(info.registered_model_version)
        mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri).set_registered_model_alias(case.registered_name, ALIAS, case.version)


def build(case: ModelCase, registry: Registry, out_dir: Path) -> None:
    """Build the case's bundle with ``packager.build_bundle``; record the error instead of raising."""
    try:
        from packager import build_bundle
    except ImportError as exc:
        case.bundle_error = f"packager.build_bundle not available ({exc})"
        return
    out = out_dir / f"{case.name}.edgepkg"
    reference = case.frame.head(500)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_bundle(case.alias_uri, str(out), tracking_uri=registry.uri, reference_data=reference)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        case.bundle_error = f"build_bundle failed: {type(exc).__name__}: {exc}"
        return
    case.bundle = out
    case.details["bundle_bytes"] = out.stat().st_size
