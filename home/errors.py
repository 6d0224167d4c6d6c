"""The exception tree of the home side.

``HomeError`` is the root of every error ``home`` raises on purpose; ``CollectorError``
is the collector's branch of it. ``RequestError`` and its
subclasses are a client's fault and carry the HTTP status they are answered with;
``TokenError`` covers the tokens file; ``StoreError`` wraps every SQLite failure
(translated in ``store.py``).
"""

from __future__ import annotations



class HomeError(Exception):
    """Root of every error the home side (collector, releases, monitoring) raises on purpose."""


class CollectorError(HomeError):
    """Root of every error the collector raises on purpose."""


class RequestError(CollectorError):
    """A request the collector refuses; ``status`` is the HTTP status it is answered with."""

    status: int = 400
    headers: dict[str, str] = {}


class Unauthorized(RequestError):
    """No bearer token, or one that no device holds."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="edgepack-collector"'}


class Forbidden(RequestError):
    """A known token whose role does not allow the request (an admin token uploading a batch)."""

    status = 403


class RequestTimeout(RequestError):
    """The body did not arrive within the body deadline; the connection is closed after the answer."""

    status = 408


class TooManyRequests(RequestError):
    """This device already has as many uploads (or bytes) in progress as it may."""

    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class Busy(RequestError):
    """The collector as a whole is at its limit of uploads or bytes in progress."""

    status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class MalformedBody(RequestError):
    """The body is not valid gzip, not UTF-8, or not JSON."""

    status = 400


class PayloadTooLarge(RequestError):
    """The body, as sent or once decompressed, is over its limit."""

    status = 413


class UnsupportedMediaType(RequestError):
    """A ``Content-Encoding`` or ``Content-Type`` the collector does not speak."""

    status = 415


class SchemaError(RequestError):
    """Valid JSON that does not follow the batch schema; ``field`` names the place at fault."""

    status = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class TokenError(CollectorError):
    """The tokens file is missing, unreadable, or a token operation is not allowed."""


class StoreError(CollectorError):
    """The SQLite store failed; nothing of the batch at hand was stored."""


class ExportError(HomeError):
    """An export (``edgepack export``) cannot run or cannot finish; what was exported stays exported."""
