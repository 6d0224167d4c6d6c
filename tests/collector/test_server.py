"""The collector's listening socket: accepted connections send without Nagle's delay."""

from __future__ import annotations

import socket

from home.server import listening_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    # Without it, asyncio leaves Nagle on for sockets from create_server, and each response
    # waits ~40 ms for the client's delayed ACK: a few dozen batches per second at most.
    server = listening_socket("127.0.0.1", 0)
    try:
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
            client.close()
    finally:
        server.close()
