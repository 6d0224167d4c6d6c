"""Errors of ``edgepack serve``."""

from __future__ import annotations

from runtime.errors import EdgeError


class ServeError(EdgeError):
    """``edgepack serve`` cannot start (bad listener, no model, missing dependency)."""


class RequestError(ServeError):
    """One request is refused; ``status`` is the HTTP status it is answered with."""

    def __init__(self, status: int, message: str, *, allow: str | None = None) -> None:
        self.status = status
        self.message = message
        self.allow = allow
        """For a 405: the method the endpoint takes."""
        super().__init__(message)
