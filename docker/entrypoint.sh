#!/bin/sh
# Entry point of the edgepack device image.
#
# The image refuses to start without the public key its bundles are signed with: nothing
# runs on a bundle whose hashes, Ed25519 signature and self-test (the model must
# reproduce its golden outputs on this device) have not just been checked. Verification
# talks on stderr so that `IMAGE edgepack predict ...` keeps a stdout of pure JSON lines.
#
# No arguments: the device agent. The image's bundle is installed into the model store
# (on the state volume) unless the store already holds this model at this or a newer
# version, then `edgepack agent` runs `edgepack serve --store` on a unix socket (a volume
# app containers share) and `edgepack sync` to the collector.
# Arguments: verify the image's bundle, then run them (e.g. `edgepack predict`).
set -eu

BUNDLE="${EDGEPACK_BUNDLE:-/opt/edgepack/model.edgepkg}"
PUBLIC_KEY="${EDGEPACK_PUBLIC_KEY:-/opt/edgepack/edge.pub}"
STORE="${EDGEPACK_STORE:-/var/lib/edgepack/models}"
SOCKET="${EDGEPACK_SOCKET:-/run/edgepack/edgepack.sock}"
DB="${EDGEPACK_DB:-/var/lib/edgepack/predictions.db}"

if [ ! -f "$PUBLIC_KEY" ]; then
    echo "entrypoint: no public key at $PUBLIC_KEY; this image does not run bundles whose authenticity it cannot check." >&2
    echo "entrypoint: build it with --build-arg PUBLIC_KEY_PEM=\"\$(cat keys/edge.pub)\", or mount the key there (EDGEPACK_PUBLIC_KEY)." >&2
    exit 78
fi

if [ "$#" -eq 0 ]; then
    : "${EDGEPACK_ENDPOINT:?set EDGEPACK_ENDPOINT to the collector URL, e.g. -e EDGEPACK_ENDPOINT=https://collector.example:8787}"
    TOKEN_FILE="${EDGEPACK_TOKEN_FILE:-/run/secrets/edgepack-token}"
    if [ ! -r "$TOKEN_FILE" ]; then
        echo "entrypoint: token file $TOKEN_FILE is not readable; mount the device token there or set EDGEPACK_TOKEN_FILE" >&2
        exit 64
    fi
    edgepack install "$BUNDLE" --store "$STORE" --public-key "$PUBLIC_KEY" --unless-newer >&2
    # EDGEPACK_SYNC_ARGS: extra sync options, split on spaces (e.g. "--interval 120 --batch-size 200").
    # EDGEPACK_SOCKET_GROUP: a group (name or gid) of app containers given access to the socket.
    exec edgepack agent --store "$STORE" --socket "$SOCKET" ${EDGEPACK_SOCKET_GROUP:+--socket-group "$EDGEPACK_SOCKET_GROUP"} \
        --public-key "$PUBLIC_KEY" --db "$DB" --endpoint "$EDGEPACK_ENDPOINT" --token-file "$TOKEN_FILE" \
        --sync-args "${EDGEPACK_SYNC_ARGS:-}"
fi

edgepack verify "$BUNDLE" --public-key "$PUBLIC_KEY" >&2
exec "$@"
