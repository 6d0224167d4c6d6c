"""Errors of ``edgepack serve``."""

from __future__ import annotations

from runtime.errors import EdgeError


class ServeError(EdgeError):
    """``edgepack serve`` cannot start (bad listener, no model, missing dependency)."""


class RequestError(ServeError):
    """One request is refused; ``status`` is the HTTP status it is answered with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)
