#!/bin/sh
# HEALTHCHECK of the edgepack device image. Healthy means the device can still do its job:
# - the bundle verifies (hashes, signature when a key is present, self-test on this device),
# - the state directory is writable, so predictions can still be buffered,
# - the prediction buffer, when it exists, passes SQLite's quick_check.
# Being offline is not unhealthy: the buffer holds predictions until the collector is back.
set -eu

BUNDLE="${EDGEPACK_BUNDLE:-/opt/edgepack/model.edgepkg}"
PUBLIC_KEY="${EDGEPACK_PUBLIC_KEY:-/opt/edgepack/edge.pub}"
DB="${EDGEPACK_DB:-/var/lib/edgepack/predictions.db}"

if [ -f "$PUBLIC_KEY" ]; then
    edgepack verify "$BUNDLE" --public-key "$PUBLIC_KEY" >/dev/null
else
    edgepack verify "$BUNDLE" >/dev/null
fi

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
