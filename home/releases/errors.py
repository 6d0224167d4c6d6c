"""Errors of the release repository (the home side of rollout)."""

from __future__ import annotations

from ..errors import HomeError


class ReleaseError(HomeError):
    """Root of every error the release repository raises on purpose."""


class KeyFileError(ReleaseError):
    """A signing key of the repository is missing, unreadable or not the role's key."""


class PublishError(ReleaseError):
    """A release cannot be published, promoted, halted or rolled back as asked."""
