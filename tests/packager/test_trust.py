"""What the build machine agrees to run (issue 10, finding 15): pickles only with
``--trust-pickle``, skops types only from the user's list, never from the artifact.

The build machine holds the signing key, so whoever can register a model version must not
be able to choose code that runs there. Real registry, real MLflow logging, the real CLI.
"""

from __future__ import annotations

import copy
import fractions
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from packager import DEFAULT_TRUSTED_TYPES, BuildOptions, UntrustedPickleError, UntrustedTypesError, build_bundle
from runtime.bundle import read_bundle
from tests.packager.conftest import Registry
from tests.support.registry import register_model

EXIT_MODEL = 5


def _build(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["build", *args, "--no-tag"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_a_pickled_model_is_refused_unless_trusted(registry: Registry, tmp_path: Path) -> None:
    # fire/3 is fire/1's pipeline logged with serialization_format="pickle".
    out = tmp_path / "p.edgepkg"
    with pytest.raises(UntrustedPickleError, match="unpickling runs whatever code the file holds") as err:
        build_bundle("models:/fire/3", out, tracking_uri=registry.uri, options=BuildOptions(tag_registry=False))
    assert "--trust-pickle" in str(err.value) and "serialization_format='skops'" in str(err.value)
    assert not out.exists()

    code, _, stderr = _build("models:/fire/3", "-o", str(out), "--tracking-uri", registry.uri)
    assert code == EXIT_MODEL and "saved as pickle" in stderr and "--trust-pickle" in stderr and "signing key" in stderr
    assert "Traceback" not in stderr and not out.exists()

    code, _, stderr = _build("models:/fire/3", "-o", str(out), "--tracking-uri", registry.uri, "--trust-pickle")
    assert code == 0, stderr
    assert read_bundle(out).manifest["model"]["version"] == "3"
    report = build_bundle("models:/fire/3", tmp_path / "q.edgepkg", tracking_uri=registry.uri,
                          options=BuildOptions(trust_pickle=True, tag_registry=False))
    assert report.model_version == "3"


def _with_extra_type(registry: Registry, name: str) -> str:
    """fire/1's pipeline carrying a ``fractions.Fraction`` (skops does not trust it), logged
    with that type in its own skops_trusted_types: what an attacker who can register would do."""
    model = copy.deepcopy(registry.models["fire/1"])
    model.steps[-1][1].notes_ = fractions.Fraction(1, 3)
    return register_model(registry.uri, name, model, registry.X, skops_trusted_types=["numpy.dtype", "fractions.Fraction"])


def test_skops_types_logged_with_the_model_are_not_trusted(registry: Registry, tmp_path: Path) -> None:
    version = _with_extra_type(registry, "extra-type")
    uri = f"models:/extra-type/{version}"
    out = tmp_path / "x.edgepkg"
    with pytest.raises(UntrustedTypesError) as err:
        build_bundle(uri, out, tracking_uri=registry.uri, options=BuildOptions(tag_registry=False))
    assert err.value.types == ["fractions.Fraction"]
    assert "--trust-type fractions.Fraction" in str(err.value) and "logged skops_trusted_types list them" in str(err.value)
    assert not out.exists()

    code, _, stderr = _build(uri, "-o", str(out), "--tracking-uri", registry.uri)
    assert code == EXIT_MODEL and "fractions.Fraction" in stderr and "--trust-type fractions.Fraction" in stderr

    code, _, stderr = _build(uri, "-o", str(out), "--tracking-uri", registry.uri, "--trust-type", "fractions.Fraction")
    assert code == 0, stderr
    assert out.exists()
    options = BuildOptions(trusted_types=(*DEFAULT_TRUSTED_TYPES, "fractions.Fraction"), tag_registry=False)
    assert build_bundle(uri, tmp_path / "y.edgepkg", tracking_uri=registry.uri, options=options).model_version == version


def test_only_the_users_list_counts_even_for_common_types(registry: Registry, tmp_path: Path) -> None:
    # fire/1 holds numpy.dtype and was logged trusting it; a user list without it refuses it.
    with pytest.raises(UntrustedTypesError) as err:
        build_bundle("models:/fire/1", tmp_path / "n.edgepkg", tracking_uri=registry.uri,
                     options=BuildOptions(trusted_types=(), tag_registry=False))
    assert err.value.types == ["numpy.dtype"]
    # The default list covers the data-only types every sklearn tree model holds (fire/2 is a tree).
    assert {"numpy.dtype", "sklearn.tree._tree.Tree"} <= set(DEFAULT_TRUSTED_TYPES)
    assert all(t in ("numpy.dtype", "collections.OrderedDict") or t.startswith(("sklearn.", "xgboost.", "lightgbm."))
               for t in DEFAULT_TRUSTED_TYPES)
    report = build_bundle("models:/fire/2", tmp_path / "t.edgepkg", tracking_uri=registry.uri, options=BuildOptions(tag_registry=False))
    assert report.model_version == "2"


def test_trusted_types_must_be_a_tuple_of_names() -> None:
    from packager import PackagerError

    with pytest.raises(PackagerError, match="trusted_types 'numpy.dtype': expected a tuple of dotted type names"):
        BuildOptions(trusted_types="numpy.dtype")  # type: ignore[arg-type]
