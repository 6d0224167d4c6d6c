"""Deadlines uvicorn does not keep: request headers, and connections left half-read.

uvicorn (0.54, h11) bounds the size of request headers (``h11_max_incomplete_event_size``)
and closes idle keep-alive connections (``timeout_keep_alive``), but a connection that
sends its headers one byte a second, or sends nothing at all, is kept open forever, and
so is one that goes on trickling a body nobody reads any more after it was answered
(every byte it sends restarts the keep-alive timer). ``guarded_protocol`` adds the three
missing guards to uvicorn's own h11 protocol:

- the headers of a request must be complete within ``header_timeout_seconds`` of the
  connection opening (or of the first byte of a later request on it), else it is closed;
- at most ``max_header_connections`` connections may be waiting for their headers at
  once; one more is closed at once (nothing has been read from it, so nothing is lost);
- once a request is answered before its body was read in full (401, 413, 429, ...), the
  rest of the body is discarded for at most ``LINGER_SECONDS`` more, then the connection
  is closed. Closing at once would reset the connection under a client still sending,
  which could then lose the answer that says why. Once that body has arrived, the
  connection is an ordinary kept-alive one again (a retry on it is served in full).

The body deadline itself is the app's (``body_timeout_seconds``, answered 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import CollectorSettings

logger = logging.getLogger("edgepack.collector")
LINGER_SECONDS = 5.0


class _Waiting:
    """Connections waiting for request headers, over the whole server (event loop only)."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.count = 0
        self.refused = 0
        self.limit = settings.max_header_connections
        self.timeout = settings.header_timeout_seconds


def guarded_protocol(settings: CollectorSettings) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the header deadline, the header-phase cap and lingering."""
    waiting = _Waiting(settings)

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._linger_timer: asyncio.TimerHandle | None = None
            self._linger_cycle: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if waiting.count >= waiting.limit:
                waiting.refused += 1
                # Logged on the first and then every 100th, so a flood cannot flood the log.
                if waiting.refused % 100 == 1:
                    logger.warning(
                        "closed a connection from %s: %d connections are already waiting for their request headers "
                        "(at most %d); %d closed so far",
                        _peer(self.client), waiting.count, waiting.limit, waiting.refused,
                    )
                transport.close()
                return
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            if self._linger_timer is None and self.conn.their_state is h11.IDLE:
                # The first bytes of a later request on a kept-alive connection.
                self._await_headers()
            lingering = self._linger_cycle if self._linger_timer is not None else None
            super().data_received(data)
            if lingering is not None and (self.cycle is not lingering or self.conn.their_state is h11.IDLE):
                self._linger_done()
            if self.conn.their_state is not h11.IDLE:
                self._headers_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing() or self.conn.their_state in (h11.DONE, h11.IDLE):
                return
            # Answered while the client was still sending the body: discard the rest for a
            # bounded time, whatever the client does, then close.
            self._unset_keepalive_if_required()
            if self._linger_timer is None:
                self._linger_cycle = self.cycle
                self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close_lingering)

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            if self._header_timer is None:
                waiting.count += 1
                self._header_timer = self.loop.call_later(waiting.timeout, self._headers_too_slow)

        def _headers_done(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
                waiting.count -= 1

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            waiting.count -= 1
            logger.warning(
                "closed a connection from %s: no complete request headers within %g s", _peer(self.client), waiting.timeout
            )
            self.transport.close()

        def _linger_done(self) -> None:
            # The rest of the answered request's body has arrived: the connection is an
            # ordinary kept-alive one again. The deadline must not outlive that request: a
            # client that reuses the connection (a retry after a 503, say) would have its
            # next request cut off mid-way, possibly after it was stored and before its answer.
            assert self._linger_timer is not None
            self._linger_timer.cancel()
            self._linger_timer = None
            self._linger_cycle = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self.conn.trailing_data[0]:
                    self._await_headers()  # part of the next request's headers is here already
                else:
                    self._unset_keepalive_if_required()
                    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def _close_lingering(self) -> None:
            self._linger_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"
