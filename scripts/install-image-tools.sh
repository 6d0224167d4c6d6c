#!/usr/bin/env bash
# Installs what tests/ship/test_image.py needs to build the device image without a
# container registry: buildah (builds images with --isolation chroot, no daemon) and
# debootstrap (makes the Debian base the test passes with --from), then fetches the
# Debian packages of that base once, so the test itself does not download them.
# Idempotent: what is already there is kept.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

packages=(buildah debootstrap)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-image-tools: ${packages[*]} already installed"
else
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    echo "install-image-tools: installed ${missing[*]}"
fi

# Keep in step with DEBOOTSTRAP_ARGS / DEBOOTSTRAP_TARBALL in tests/ship/buildah.py.
tarball="${EDGEPACK_DEBOOTSTRAP_TARBALL:-/var/cache/edgepack/debootstrap-bookworm-python3.tgz}"
mirror="${EDGEPACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ -s "$tarball" ] && [ -z "$(find "$tarball" -mtime +7)" ]; then
    echo "install-image-tools: $tarball is recent"
else
    $SUDO mkdir -p "$(dirname "$tarball")"
    work=$($SUDO mktemp -d)
    trap '$SUDO rm -rf "$work"' EXIT
    $SUDO debootstrap --variant=minbase --include=python3,python3-venv \
        --make-tarball="$work/debs.tgz" bookworm "$work/root" "$mirror" >/dev/null
    $SUDO mv "$work/debs.tgz" "$tarball"
    echo "install-image-tools: fetched the Debian base packages into $tarball"
fi
