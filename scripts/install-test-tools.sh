#!/usr/bin/env bash
# Installs the clients tests/serve drives against a real `edgepack serve` that are not
# Python: curl (--unix-socket) and Node.js, both from Debian. Idempotent: what is already
# there is kept.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-tools: curl and node already installed"
else
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    echo "install-test-tools: installed ${missing[*]}"
fi
