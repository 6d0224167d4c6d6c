"""The one exception tree of the device side.

``EdgeError`` is the root; ``BundleError`` covers everything wrong with a bundle file,
``SignatureError`` the signature part of it; ``InputError`` is also a ``ValueError`` so
that callers who already catch ``ValueError`` around a predict keep working.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error edgepack raises on purpose."""


class BundleError(EdgeError):
    """The bundle is malformed, tampered with, or cannot be used here.

    ``entry`` names the archive entry at fault (``None`` when the archive as a whole is).
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        self.entry = entry
        super().__init__(f"{entry}: {message}" if entry else message)


class SignatureError(BundleError):
    """The manifest signature is missing (when required), malformed or does not verify."""


class InputError(EdgeError, ValueError):
    """A prediction input does not match the model's input contract.

    ``feature`` names the offending feature when there is one; ``row`` is the 0-based
    position of the offending row when several rows were given at once.
    """

    def __init__(self, message: str, *, feature: str | None = None, row: int | None = None) -> None:
        self.feature = feature
        self.row = row
        self.reason = message
        super().__init__(f"row {row}: {message}" if row is not None else message)

    def at_row(self, row: int) -> InputError:
        """The same error, located at ``row`` of a batch."""
        return InputError(self.reason, feature=self.feature, row=row)


class SelfTestError(BundleError):
    """The model in the bundle does not reproduce its golden outputs on this device."""


class SchemaChangeError(BundleError):
    """A swap would replace the model with one of another name or another input schema."""


class DowngradeError(BundleError):
    """A validly signed bundle is older than the version this device already ran.

    ``name`` and ``version`` describe the refused bundle, ``floor`` the lowest version the
    device still accepts for that model name (see ``runtime.highwater``).
    """

    def __init__(self, message: str, *, name: str | None = None, version: int | None = None, floor: int | None = None) -> None:
        self.name = name
        self.version = version
        self.floor = floor
        super().__init__(message)


class StoreError(EdgeError):
    """The model store (``runtime.store``) is unusable, or an install into it was refused."""


class StateFileError(EdgeError):
    """The version state file (``runtime.highwater``) cannot be read or written."""


class PredictionError(EdgeError):
    """onnxruntime failed while running a model that loaded and self-tested fine."""


class RollbackError(EdgeError):
    """``ModelSlot.rollback()`` was called with no previous model to return to."""
