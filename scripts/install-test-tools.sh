#!/usr/bin/env bash
# Installs the clients tests/serve drives against a real `edgepack serve` that are not
# Python: curl (--unix-socket) and Node.js, both from Debian, and the headless chromium that
# tests/monitoring loads the dashboard in. Idempotent: what is already there is kept.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-tools: curl, node and chromium already installed"
else
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    echo "install-test-tools: installed ${missing[*]}"
fi
