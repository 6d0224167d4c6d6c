"""Options of ``edgepack serve``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK = ("127.0.0.1", "::1", "localhost")
DEFAULT_MAX_BODY = 4 << 20
DEFAULT_INLINE_ROWS = 64


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """Where and how ``edgepack serve`` listens."""

    socket: Path | None = None
    """Unix socket path to listen on (created owner-only, 0600, or 0660 with ``socket_group``)."""
    socket_group: str | int | None = None
    """Group (name or gid) given read/write access to the socket, for app containers of that group."""
    host: str | None = None
    """TCP host to listen on instead of a socket; loopback only unless ``allow_remote``."""
    port: int = 8080
    """TCP port (with ``host``); 0 picks a free one."""
    allow_remote: bool = False
    """Allow a non-loopback ``host``. serve has no authentication: anyone who reaches it can predict."""
    max_body_bytes: int = DEFAULT_MAX_BODY
    """Largest request body accepted; a larger one is answered 413 without being read."""
    inline_rows: int = DEFAULT_INLINE_ROWS
    """Requests of at most this many rows are predicted on the event loop (cheapest for small
    requests); larger ones in a worker thread, so they do not stall other clients."""
    store_interval: float = 0.5
    """With a store: seconds between two looks at its pointer (one stat call each)."""

    def __post_init__(self) -> None:
        if (self.socket is None) == (self.host is None):
            raise ValueError("give exactly one of socket and host")
        if self.host is not None and self.host not in LOOPBACK and not self.allow_remote:
            raise ValueError(
                f"host {self.host!r} is not loopback; serve has no authentication, so it listens on 127.0.0.1 or ::1 "
                "(or a unix socket) unless allow_remote is set"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
