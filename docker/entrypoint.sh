#!/bin/sh
# Entry point of the edgepack device image.
#
# Nothing runs on a bundle that has not just been verified: hashes of every entry, the
# Ed25519 signature when a public key is present, and the self-test (the model must
# reproduce its golden outputs on this device). Verification talks on stderr so that
# `IMAGE edgepack predict ...` keeps a stdout of pure JSON lines.
#
# No arguments: run the telemetry sync service. Arguments: run them (e.g. `edgepack predict`).
set -eu

BUNDLE="${EDGEPACK_BUNDLE:-/opt/edgepack/model.edgepkg}"
PUBLIC_KEY="${EDGEPACK_PUBLIC_KEY:-/opt/edgepack/edge.pub}"

if [ "${EDGEPACK_SKIP_VERIFY:-0}" != "1" ]; then
    if [ -f "$PUBLIC_KEY" ]; then
        edgepack verify "$BUNDLE" --public-key "$PUBLIC_KEY" >&2
    else
        edgepack verify "$BUNDLE" >&2
    fi
fi

if [ "$#" -eq 0 ]; then
    : "${EDGEPACK_ENDPOINT:?set EDGEPACK_ENDPOINT to the collector URL, e.g. -e EDGEPACK_ENDPOINT=https://collector.example:8787}"
    TOKEN_FILE="${EDGEPACK_TOKEN_FILE:-/run/secrets/edgepack-token}"
    if [ ! -r "$TOKEN_FILE" ]; then
        echo "entrypoint: token file $TOKEN_FILE is not readable; mount the device token there or set EDGEPACK_TOKEN_FILE" >&2
        exit 64
    fi
    # EDGEPACK_SYNC_ARGS: extra sync options, split on spaces (e.g. "--interval 120 --batch-size 200").
    # shellcheck disable=SC2086
    exec edgepack sync --db "${EDGEPACK_DB:-/var/lib/edgepack/predictions.db}" \
        --endpoint "$EDGEPACK_ENDPOINT" --token-file "$TOKEN_FILE" ${EDGEPACK_SYNC_ARGS:-}
fi

exec "$@"
