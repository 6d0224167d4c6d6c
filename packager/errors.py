"""The one exception tree of the build side.

Every error names what was wrong and what was expected instead; errors from MLflow,
skops, skl2onnx and onnxruntime are translated where they are caught, ``from`` the original.
"""

from __future__ import annotations

from runtime.errors import EdgeError


class PackagerError(EdgeError):
    """Root of every error ``edgepack build`` raises on purpose."""


class RegistryError(PackagerError):
    """The registry cannot be reached, or the model URI does not resolve."""


class ModelNotFoundError(RegistryError, LookupError):
    """A model name, stage, alias or version does not exist; the message lists what does."""


class ModelLoadError(PackagerError):
    """The registered model's artifacts cannot be loaded."""


class UntrustedPickleError(ModelLoadError):
    """The model is a pickle and ``BuildOptions.trust_pickle`` (``--trust-pickle``) is off."""


class UntrustedTypesError(ModelLoadError):
    """A skops-serialised model holds types that neither skops nor the user's list trusts.

    ``types`` lists them.
    """

    def __init__(self, message: str, *, types: list[str]) -> None:
        self.types = types
        super().__init__(message)


class UnsupportedFlavorError(ModelLoadError):
    """The model has no flavor edgepack can convert (``sklearn``, ``xgboost``, ``lightgbm`` or ``onnx``)."""


class UnsupportedModelError(PackagerError):
    """A step of the model has no converter, or is known to convert wrongly (refused before converting).

    ``step`` is the step's path inside the model (``pre/cat/encode``), ``cls`` its class name.
    """

    def __init__(self, message: str, *, step: str | None = None, cls: str | None = None) -> None:
        self.step = step
        self.cls = cls
        super().__init__(message)


class ConversionError(PackagerError):
    """skl2onnx, onnxmltools or onnx failed on a model that passed the support checks.

    Not a parity failure: the converter gave no model to compare. ``step`` is the path of
    the step the converter names (``""`` for a bare estimator, None when unknown), ``cls``
    its class name.
    """

    def __init__(self, message: str, *, step: str | None = None, cls: str | None = None) -> None:
        self.step = step
        self.cls = cls
        super().__init__(message)


class ReferenceDataError(PackagerError):
    """The reference data cannot be read, or does not match the model's inputs."""


class ParityError(PackagerError):
    """The ONNX model does not answer like the original on the reference rows.

    ``worst`` holds the worst rows (inputs, expected, got) for the report.
    """

    def __init__(self, message: str, *, worst: list[dict[str, object]] | None = None) -> None:
        self.worst = worst or []
        super().__init__(message)


class SelfTestFailedError(PackagerError):
    """The written bundle does not load and reproduce its golden outputs through ``runtime.load``."""


class WheelError(PackagerError):
    """Device wheels cannot be gathered for a platform.

    ``package`` names the requirement pip could not satisfy (when known), ``platform`` the
    target platform tag.
    """

    def __init__(self, message: str, *, package: str | None = None, platform: str | None = None) -> None:
        self.package = package
        self.platform = platform
        super().__init__(message)
