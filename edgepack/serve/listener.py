"""The listening socket of ``edgepack serve``, made before uvicorn sees it.

uvicorn's own ``--uds`` makes the socket world-writable (0666); here it is bound under
a umask of 0177, so it exists owner-only from its first instant, then opened to one
group when asked.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
from pathlib import Path

from .errors import ServeError
from .options import ServeOptions

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
BACKLOG = 2048  # uvicorn's default


def _group_id(group: str | int) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ServeError(f"--socket-group {group!r}: no such group on this system") from None


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServeError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left behind by a server that died: nobody answers on it
    else:
        raise ServeError(f"another server is already listening on {path}")
    finally:
        probe.close()


def unix_listener(path: Path, group: str | int | None = None) -> socket.socket:
    path = Path(path)
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ServeError(f"socket path {path} is longer than {_MAX_UNIX_PATH} bytes, the limit of unix sockets; use a shorter one")
    if not path.parent.is_dir():
        raise ServeError(f"the directory of the socket, {path.parent}, does not exist")
    gid = None if group is None else _group_id(group)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old)
    try:
        if gid is not None:
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
        sock.listen(BACKLOG)  # connections made before uvicorn's loop runs wait instead of being refused
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise ServeError(f"cannot give group {group} access to {path}: {exc.strerror or exc}") from exc
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve host {host!r}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def listener(options: ServeOptions) -> tuple[socket.socket, str]:
    """The bound socket and how to reach it (``unix:PATH`` or ``http://HOST:PORT``)."""
    if options.socket is not None:
        return unix_listener(options.socket, options.socket_group), f"unix:{options.socket}"
    sock = tcp_listener(options.host or "127.0.0.1", options.port)
    host, port = sock.getsockname()[:2]
    return sock, f"http://{'[' + host + ']' if ':' in host else host}:{port}"
