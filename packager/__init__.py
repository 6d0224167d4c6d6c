"""Build side: turn a registry model into a verified, signed .edgepkg bundle.

Needs the ``packager`` extra (``pip install 'edgepack[packager]'``).
"""

from importlib.util import find_spec as _find_spec

from edgepack.extras import EXTRA_MODULES as _EXTRA_MODULES, MissingExtraError as _MissingExtraError



def _absent(module: str) -> bool:
    try:
        return _find_spec(module) is None
    except (ImportError, ValueError):
        return True


# A cheap presence check: importing mlflow here would cost seconds on every `import packager`.
if _missing := [m for m in _EXTRA_MODULES["packager"] if _absent(m)]:
    raise _MissingExtraError(
        f"edgepack build needs the 'packager' extra ({', '.join(_missing)} not installed); "
        "install it with: pip install 'edgepack[packager]'"
    )

from .build import build_bundle
from .errors import (
    ConversionError,
    ModelLoadError,
    ModelNotFoundError,
    PackagerError,
    ParityError,
    ReferenceDataError,
    RegistryError,
    SelfTestFailedError,
    UnsupportedFlavorError,
    UnsupportedModelError,
    UntrustedPickleError,
    UntrustedTypesError,
)
from .options import DEFAULT_TRUSTED_TYPES, BuildOptions, BuildReport

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "BuildOptions",
    "BuildReport",
    "ConversionError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PackagerError",
    "ParityError",
    "ReferenceDataError",
    "RegistryError",
    "SelfTestFailedError",
    "UnsupportedFlavorError",
    "UnsupportedModelError",
    "UntrustedPickleError",
    "UntrustedTypesError",
    "build_bundle",
]
