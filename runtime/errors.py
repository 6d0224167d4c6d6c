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

    ``feature`` names the offending feature when there is one.
    """

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        self.feature = feature
        super().__init__(message)


class SelfTestError(BundleError):
    """The model in the bundle does not reproduce its golden outputs on this device."""
