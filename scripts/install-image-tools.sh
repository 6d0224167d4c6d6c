#!/usr/bin/env bash
# Installs what tests/ship/test_image.py needs to build the device image without a
# container registry: buildah (builds OCI images rootless-style with --isolation chroot)
# and debootstrap (makes the Debian base rootfs the test passes with --from).
# Idempotent: re-running it only updates the package lists.
set -euo pipefail

packages=(buildah debootstrap)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-image-tools: ${packages[*]} already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-image-tools: installed ${missing[*]}"
