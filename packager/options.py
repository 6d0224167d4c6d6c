"""Build options, the build report, and how device wheels are gathered."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    # XGBoost's and LightGBM's scikit-learn estimators: their state is the booster's own
    # model text/bytes, parsed by the library's loader, as the native flavors load it anyway.
    "collections.OrderedDict",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
)
"""skops types edgepack trusts without being told: the fitted state of the estimators
edgepack converts (trees, boosted trees, neighbours, MLPs, XGBoost, LightGBM) that skops 0.16 has
not vetted. Each is rebuilt from strings and arrays by sklearn's own class; none makes skops
import or call anything else the file names. What remains is sklearn's compiled code
trusting the arrays it is given: set ``trusted_types=()`` to refuse these too."""


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How a bundle is built. The defaults are what ``edgepack build`` uses."""

    abs_tolerance: float | None = None
    """Parity: largest absolute difference allowed (None: 1e-4 for classification, 1e-6 for regression)."""
    rel_tolerance: float | None = None
    """Parity: largest relative difference allowed (None: 1e-4)."""
    precisions: tuple[str, ...] = ("float32", "float64")
    """Precisions tried in order; the first that passes parity is shipped."""
    synth_rows: int = 200
    """Rows synthesised from the input example when no reference data is given."""
    nan_probe_rows: int = 20
    """Rows per numeric feature with that feature set to NaN, to prove (not assume) ``nullable``."""
    threshold_probe_rows: int = 20000
    """Most rows probing tree split thresholds (each threshold, its float64 and float32 neighbours);
    beyond it the probes are spread evenly over the thresholds."""
    max_reference_rows: int = 5000
    """Reference data beyond this many rows is sampled down (deterministically)."""
    golden_rows: int = 20
    """Rows in golden.json (edge rows first)."""
    histogram_bins: int = 10
    """Bins of the baseline histograms."""
    seed: int = 0
    """Seed for synthesis and sampling: the same seed gives the same bundle."""
    worst_rows: int = 5
    """Rows shown when parity fails."""
    target_column: str | None = None
    """Regression: a column of the reference data holding the true target, for ``target_range``."""
    trust_pickle: bool = False
    """Load sklearn models saved as pickle/cloudpickle. Unpickling runs whatever code the file
    holds, on the build machine, next to the signing key: set it (``--trust-pickle``) only if
    everyone who can register a model version may run code there. skops files need no trust."""
    trusted_types: tuple[str, ...] = DEFAULT_TRUSTED_TYPES
    """Types a skops file may hold beyond those skops trusts by default (``--trust-type``
    adds to these). Only this list counts: the ``skops_trusted_types`` logged with the
    model were written by whoever registered it, so they are ignored."""
    tag_registry: bool = True
    """Tag the registry version with the bundle's sha256 and the edgepack version."""
    encode_strings: bool = True
    """Cut a graph's one-hot encoding of string features off and let the device encode them
    (docs/bundle-format.md, "Encoded inputs"; about a quarter of a single-row forest run).
    Runtimes older than the manifest's ``inputs[].encoding`` refuse such bundles: set False
    to build for devices that have not been upgraded yet."""

    def __post_init__(self) -> None:
        from .errors import PackagerError

        for name in ("abs_tolerance", "rel_tolerance"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise PackagerError(f"{name} is {value!r}; expected a number >= 0 (or None for the default)")
        unknown = [p for p in self.precisions if p not in ("float32", "float64")]
        if unknown or not self.precisions:
            raise PackagerError(f"precisions {self.precisions!r}: expected a non-empty sequence of 'float32' and 'float64'")
        if isinstance(self.trusted_types, str) or not all(isinstance(t, str) and t for t in self.trusted_types):
            raise PackagerError(f"trusted_types {self.trusted_types!r}: expected a tuple of dotted type names")
        for name in ("synth_rows", "golden_rows", "max_reference_rows", "histogram_bins", "threshold_probe_rows"):
            if getattr(self, name) < 1:
                raise PackagerError(f"{name} is {getattr(self, name)}; expected at least 1")


@dataclass(frozen=True, kw_only=True)
class BuildReport:
    """What ``build_bundle`` wrote."""

    path: str
    """Where the bundle is."""
    sha256: str
    """sha256 of the bundle file (also tagged on the registry version)."""
    size: int
    """Bundle size in bytes."""
    model_name: str
    """Registered model name."""
    model_version: str
    """The concrete registry version built from."""
    requested_uri: str
    """The URI asked for."""
    resolved: dict[str, str] = field(default_factory=dict)
    """``{"kind": "alias"|"stage"|"version"|"latest", "value": ...}``."""
    flavor: str = "sklearn"
    """MLflow flavor the model came in."""
    task: str = "classification"
    """``classification`` or ``regression``."""
    precision: str = "float32"
    """Precision that passed parity."""
    parity: dict[str, Any] = field(default_factory=dict)
    """The manifest's ``parity`` record."""
    warnings: tuple[str, ...] = ()
    """Guardrails the bundle lacks and why (e.g. no training ranges without reference data)."""
    registry_tags: dict[str, str] = field(default_factory=dict)
    """Tags written on the registry version (empty with ``tag_registry=False``)."""
    signed: bool = False
    """True when ``manifest.sig`` was written."""
    files: tuple[str, ...] = ()
    """Archive entries besides the manifest and signature."""
    tagged: bool = False
    """True when provenance tags were written to the registry."""
    converters: tuple[dict[str, str], ...] = ()
    """Which converter handled each step: ``{"step", "estimator", "converter"}`` (also in the manifest's ``onnx``)."""
    label_only: bool = False
    """A classifier without ``predict_proba``: its bundle answers labels only (no ``probabilities``)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: ``resolve``, ``load``, ``convert``, ``parity``, ``write``, ``self_test``, ``tag``."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = list(self.files)
        out["converters"] = [dict(c) for c in self.converters]
        return out


def default_wheel_cache() -> Path:
    override = os.environ.get("EDGEPACK_WHEEL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack" / "wheels"


@dataclass(frozen=True, kw_only=True)
class WheelOptions:
    """How ``device_wheels`` gathers wheels."""

    cache_dir: Path | None = None
    """Wheels downloaded before are kept here and tried first, offline. Default:
    ``$EDGEPACK_WHEEL_CACHE`` or ``~/.cache/edgepack/wheels``."""
    pin_installed: bool = True
    """Pin every device dependency to the version installed here (where parity ran),
    unless ``requirements`` already constrains it."""
    edgepack_wheel: Path | None = None
    """Use this edgepack wheel instead of building one from the source tree."""
    pip: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "pip"))
    """The pip command to run."""
    timeout: float = 900.0
    """Seconds one pip run may take before it is stopped."""
