"""The MLflow side: resolve a model URI once, download that version, load it, tag it.

Every MLflow call goes through here, so MLflow's exceptions are translated in one place.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import (
    ModelLoadError,
    ModelNotFoundError,
    RegistryError,
    UnsupportedFlavorError,
    UntrustedPickleError,
    UntrustedTypesError,
)
from .options import DEFAULT_TRUSTED_TYPES

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SUPPORTED_FLAVORS = ("sklearn", "xgboost", "lightgbm", "onnx")
TAG_SHA256 = "edgepack.bundle_sha256"
TAG_VERSION = "edgepack.version"
TAG_BUNDLE_PREFIX = "edgepack.bundle."
"""One tag per bundle built from a version, ``edgepack.bundle.<first 16 hex of its sha256>`` =
the full sha256: rebuilds add to the history instead of overwriting it."""

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))/?$")


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """One concrete registry version, as resolved from the URI the user asked for."""

    name: str
    """Registered model name."""
    version: str
    """The concrete version every later step uses."""
    run_id: str | None
    """The run that logged the version, when known."""
    requested_uri: str
    """The URI as given (``models:/n@alias``, ``models:/n/Production``, ``models:/n/3``)."""
    kind: str
    """How the URI named the version: ``alias``, ``stage``, ``version`` or ``latest``."""
    value: str
    """The alias, stage or version string from the URI."""
    registry_uri: str
    """The registry URI with any credentials removed."""
    created_at: int | None
    """Registry creation time of the version, ms since the epoch."""
    tracking_uri: str = field(repr=False)
    """The registry URI as used (may hold credentials; never written to a bundle)."""

    @property
    def concrete_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A downloaded registry model: the object to convert plus what MLflow logged with it."""

    flavor: str
    """``sklearn``, ``xgboost``, ``lightgbm`` or ``onnx``."""
    model: Any
    """The sklearn(-API) estimator, or the ``onnx.ModelProto`` (external data loaded in)."""
    input_example: Any
    """The logged input example as a pandas DataFrame, or ``None``."""
    signature_columns: list[tuple[str, str]] | None
    """``(name, mlflow type)`` per column of the logged input signature, when it has named columns."""


def tracking_uri_from(explicit: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def redact(uri: str) -> str:
    """Drop ``user:password@`` from a URI so it can go into a manifest."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _versions(client: Any, name: str) -> list[Any]:
    escaped = name.replace("'", "\\'")
    versions = client.search_model_versions(filter_string=f"name = '{escaped}'")
    return sorted(versions, key=lambda mv: int(mv.version))


def _check_sqlite_exists(tracking_uri: str) -> None:
    # MLflow would silently create an empty registry (and its directories) at a wrong path.
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if str(path) in ("", ":memory:") or path.is_file():
        return
    raise RegistryError(
        f"no MLflow registry database at {str(path.resolve())!r} (tracking URI {tracking_uri}); expected an existing "
        "registry: pass --tracking-uri, set MLFLOW_TRACKING_URI, or run in the directory that holds mlflow.db"
    )


def resolve(model_uri: str, tracking_uri: str) -> ResolvedModel:
    """Resolve ``model_uri`` to exactly one registered version (once; every later step uses it)."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(model_uri)
    if match is None:
        raise RegistryError(
            f"cannot read model URI {model_uri!r}; expected models:/NAME/STAGE, models:/NAME@ALIAS "
            "or models:/NAME/VERSION (e.g. models:/fire-risk/Production, models:/fire-risk@champion, models:/fire-risk/3)"
        )
    name, alias, ref = match["name"], match["alias"], match["ref"]
    _check_sqlite_exists(tracking_uri)
    client = _client(tracking_uri)
    try:
        try:
            registered = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            names = sorted(rm.name for rm in client.search_registered_models())
            raise ModelNotFoundError(
                f"no registered model named {name!r} in {redact(tracking_uri)}; "
                f"registered models: {', '.join(names) if names else '(none)'}"
            ) from exc
        versions = _versions(client, name)
        if alias is not None:
            kind, value = "alias", alias
            aliases = dict(registered.aliases or {})
            if alias not in aliases:
                listed = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "(none)"
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}; its aliases: {listed}")
            version = str(aliases[alias])
        elif ref is not None and ref.isdigit():
            kind, value, version = "version", ref, ref
            if version not in {str(mv.version) for mv in versions}:
                listed = ", ".join(str(mv.version) for mv in versions) or "(none)"
                raise ModelNotFoundError(f"model {name!r} has no version {version}; its versions: {listed}")
        elif ref is not None and ref.lower() == "latest":
            kind, value = "latest", ref
            if not versions:
                raise ModelNotFoundError(f"model {name!r} has no versions")
            version = str(versions[-1].version)
        else:
            kind, value = "stage", str(ref)
            in_stage = [mv for mv in versions if (mv.current_stage or "").lower() == value.lower()]
            if not in_stage:
                stages = sorted(
                    {f"{mv.current_stage} (version {mv.version})" for mv in versions if mv.current_stage not in (None, "None")}
                )
                raise ModelNotFoundError(
                    f"model {name!r} has no version in stage {value!r}; stages in use: "
                    f"{', '.join(stages) if stages else '(none)'}; aliases: "
                    f"{', '.join('@' + a for a in sorted(registered.aliases or {})) or '(none)'}"
                )
            version = str(in_stage[-1].version)
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"registry {redact(tracking_uri)} failed while resolving {model_uri!r}: {exc.message}") from exc
    return ResolvedModel(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        requested_uri=model_uri,
        kind=kind,
        value=value,
        registry_uri=redact(tracking_uri),
        created_at=int(mv.creation_timestamp) if mv.creation_timestamp is not None else None,
        tracking_uri=tracking_uri,
    )


def download(resolved: ResolvedModel, directory: str | os.PathLike[str]) -> Path:
    """Download the artifacts of exactly ``resolved.version`` (never the alias or stage again)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        # Not download_artifacts("models:/name/version", tracking_uri=...): MLflow 3.17 builds a
        # client from the process-wide tracking URI there, ignoring the one passed in. Ask the
        # registry for the version's concrete artifact location instead.
        location = _client(resolved.tracking_uri).get_model_version_download_uri(resolved.name, resolved.version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(directory))
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot download the artifacts of {resolved.concrete_uri}: {exc}") from exc
    return Path(local)


def load(
    model_dir: str | os.PathLike[str], *, trust_pickle: bool = False, trusted_types: Sequence[str] = DEFAULT_TRUSTED_TYPES
) -> LoadedModel:
    """Load the model in an MLflow model directory (``MLmodel`` + artifacts).

    Nothing the registry wrote decides what runs here: pickles load only with
    ``trust_pickle``, and skops files only with types skops trusts or ``trusted_types`` lists.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    path = Path(model_dir)
    try:
        meta = Model.load(str(path))
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"{path} is not an MLflow model directory (no readable MLmodel): {exc}") from exc
    flavors = meta.flavors or {}
    if "sklearn" in flavors:
        model = _load_sklearn(path, flavors["sklearn"], trust_pickle=trust_pickle, trusted_types=trusted_types)
        flavor = "sklearn"
    elif "xgboost" in flavors or "lightgbm" in flavors:
        from . import native

        flavor = "xgboost" if "xgboost" in flavors else "lightgbm"
        conf = flavors[flavor]
        if flavor == "lightgbm" and conf.get("model_class", "lightgbm.basic.Booster") != "lightgbm.basic.Booster":
            # mlflow.lightgbm saves a scikit-learn-API model with skops or (cloud)pickle, like
            # the sklearn flavor: the same trust decision, never the artifact's own list.
            sklearn_conf = {"pickled_model": conf.get("data"), "serialization_format": conf.get("serialization_format", "cloudpickle")}
            model = _load_sklearn(path, sklearn_conf, trust_pickle=trust_pickle, trusted_types=trusted_types)
        else:
            model = native.load_xgboost(path) if flavor == "xgboost" else native.load_lightgbm(path)
    elif "onnx" in flavors:
        model = _load_onnx(path, flavors["onnx"])
        flavor = "onnx"
    else:
        raise UnsupportedFlavorError(
            f"the model has flavors {', '.join(sorted(flavors)) or '(none)'}; edgepack converts "
            f"{', '.join(SUPPORTED_FLAVORS)} models (log it with mlflow.sklearn.log_model, mlflow.xgboost.log_model, "
            "mlflow.lightgbm.log_model or mlflow.onnx.log_model)"
        )
    example = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = meta.load_input_example(str(path))
    except Exception as exc:  # MLflow raises a variety of errors for odd examples
        raise ModelLoadError(f"cannot read the logged input example: {exc}") from exc
    example = _as_frame(example)
    columns = None
    schema = meta.get_input_schema()
    if schema is not None and schema.has_input_names() and not schema.is_tensor_spec():
        # DataType members print as "DataType.string"; their .name is the plain "string".
        columns = [(col.name, str(getattr(col.type, "name", col.type))) for col in schema.inputs]
    return LoadedModel(flavor=flavor, model=model, input_example=example, signature_columns=columns)


def _as_frame(example: Any) -> Any:
    import pandas as pd

    if example is None:
        return None
    frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
    # A numpy example gives integer column labels; names are strings everywhere else.
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _load_sklearn(path: Path, conf: dict[str, Any], *, trust_pickle: bool, trusted_types: Sequence[str]) -> Any:
    data = path / conf.get("pickled_model", "model.pkl")
    fmt = conf.get("serialization_format", "pickle")
    if fmt == "skops":
        import skops.io

        # conf["skops_trusted_types"] is deliberately unused: whoever registered the model
        # wrote it, so trusting it would let them choose what this machine loads.
        trusted = list(trusted_types)
        try:
            untrusted = [t for t in skops.io.get_untrusted_types(file=data) if t not in trusted]
        except Exception as exc:
            raise ModelLoadError(f"cannot read skops file {data.name}: {exc}") from exc
        if untrusted:
            logged = [t for t in conf.get("skops_trusted_types") or [] if t in untrusted]
            raise UntrustedTypesError(
                f"the skops model holds types that neither skops nor edgepack trusts: {', '.join(untrusted)}"
                + (" (the model's logged skops_trusted_types list them, but that list comes from whoever "
                   "registered the model and is ignored)" if logged else "")
                + "; loading a type runs its code on this build machine. Review them, then pass "
                + " ".join(f"--trust-type {t}" for t in untrusted)
                + f" (BuildOptions(trusted_types=DEFAULT_TRUSTED_TYPES + {tuple(untrusted)!r}))",
                types=untrusted,
            )
        try:
            return skops.io.load(data, trusted=trusted or None)
        except Exception as exc:
            raise ModelLoadError(f"cannot load skops file {data.name}: {exc}") from exc
    if fmt in ("pickle", "cloudpickle"):
        if not trust_pickle:
            raise UntrustedPickleError(
                f"the model is saved as {fmt}, and unpickling runs whatever code the file holds, here, on the machine "
                "that holds the signing key: anyone who can register a model version could run code as this build. "
                "Log the model with serialization_format='skops', or pass --trust-pickle "
                "(BuildOptions(trust_pickle=True)) if everyone who can write to this registry may do that"
            )
        try:
            with data.open("rb") as fh:
                if fmt == "cloudpickle":
                    import cloudpickle

                    return cloudpickle.load(fh)
                return pickle.load(fh)
        except Exception as exc:
            raise ModelLoadError(f"cannot unpickle {data.name}: {exc}") from exc
    raise ModelLoadError(f"unknown sklearn serialization_format {fmt!r}; expected skops, pickle or cloudpickle")


def _load_onnx(path: Path, conf: dict[str, Any]) -> Any:
    import onnx

    data = path / conf.get("data", "model.onnx")
    try:
        # Loads external tensor files from the same directory, so the whole directory is needed.
        return onnx.load(str(data), load_external_data=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load ONNX model {data.name} (external data included): {exc}") from exc


def tag_provenance(resolved: ResolvedModel, *, sha256: str, edgepack_version: str) -> dict[str, str]:
    """Record on the registry version which bundle was built from it; returns the tags written.

    ``edgepack.bundle_sha256`` and ``edgepack.version`` name the latest build; one
    ``edgepack.bundle.<sha256 prefix>`` tag per bundle keeps every build's sha256.
    """
    from mlflow.exceptions import MlflowException

    tags = {TAG_BUNDLE_PREFIX + sha256[:16]: sha256, TAG_SHA256: sha256, TAG_VERSION: edgepack_version}
    client = _client(resolved.tracking_uri)
    try:
        for key, value in tags.items():
            client.set_model_version_tag(resolved.name, resolved.version, key, value)
    except MlflowException as exc:
        raise RegistryError(
            f"the bundle was written, but tagging {resolved.concrete_uri} with its sha256 failed: {exc.message}"
        ) from exc
    return tags


ResolveHook = Callable[[ResolvedModel], None]
