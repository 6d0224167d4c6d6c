"""Errors of the device's update loop."""

from __future__ import annotations


class UpdateError(Exception):
    """Root of every error the update loop raises on purpose."""


class UpdateRefused(UpdateError):
    """An update was refused (metadata, bundle or release); the device stays on its bundle.

    ``reason`` is a short sentence for the report home; ``release`` the release number
    concerned (0 when the repository itself was refused)."""

    def __init__(self, reason: str, *, release: int = 0, channel: str | None = None, bundle_sha256: str | None = None,
                 permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent
        """True when the release itself is bad (its bundle fails its own checks): never retried.
        Transport problems (a wrong or oversized download) are retried on the next change."""
        self.reason = reason
        self.release = release
        self.channel = channel
        self.bundle_sha256 = bundle_sha256


class DownloadInterrupted(UpdateError):
    """The network failed mid-way; the partial file is kept and the next poll resumes it."""


class ConfigError(UpdateError):
    """The update loop was set up wrong (trust root missing, bad option)."""
