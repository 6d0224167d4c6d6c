#!/bin/sh
# HEALTHCHECK of the edgepack device image. Healthy means the device can still do its job:
# - the public key is there (the image never runs unverified bundles),
# - `edgepack serve` answers 200 on /v2/health/ready through its socket: it serves a model
#   that passed verification (hashes, signature, self-test) when it was loaded,
# - the state directory is writable, so predictions can still be buffered,
# - the prediction buffer, when it exists, passes SQLite's quick_check.
# Being offline is not unhealthy: the buffer holds predictions until the collector is back.
set -eu

PUBLIC_KEY="${EDGEPACK_PUBLIC_KEY:-/opt/edgepack/edge.pub}"
SOCKET="${EDGEPACK_SOCKET:-/run/edgepack/edgepack.sock}"
DB="${EDGEPACK_DB:-/var/lib/edgepack/predictions.db}"

if [ ! -f "$PUBLIC_KEY" ]; then
    echo "healthcheck: no public key at $PUBLIC_KEY" >&2
    exit 1
fi

python - "$SOCKET" <<'PY'
import http.client
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


try:
    connection = UnixConnection(sys.argv[1])
    connection.request("GET", "/v2/health/ready")
    response = connection.getresponse()
    status, body = response.status, response.read().decode("utf-8", "replace")
except OSError as exc:
    sys.exit(f"healthcheck: edgepack serve does not answer on {sys.argv[1]}: {exc}")
if status != 200:
    sys.exit(f"healthcheck: edgepack serve is not ready ({status}): {body}")
PY

STATE_DIR=$(dirname "$DB")
if [ ! -w "$STATE_DIR" ]; then
    echo "healthcheck: $STATE_DIR is not writable; predictions cannot be buffered" >&2
    exit 1
fi

if [ -f "$DB" ]; then
    python - "$DB" <<'PY'
import sqlite3
import sys

try:
    con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
    result = con.execute("PRAGMA quick_check").fetchone()[0]
except sqlite3.DatabaseError as exc:
    result = str(exc)
if result != "ok":
    sys.exit(f"healthcheck: prediction buffer {sys.argv[1]} is damaged: {result}")
PY
fi
