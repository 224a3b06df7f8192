#!/usr/bin/env bash
# Makes a Debian bookworm base image with Python 3.11 without reaching any container registry:
# debootstrap from Debian's package archive, imported into podman. Idempotent: an existing image
# is kept. Used by `make image-smoke`; `make image IMAGE_BASE=<it>` builds on it too.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
image=${1:-localhost/analytics-base:bookworm}
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

"$root/deploy/local/apt-install.sh" debootstrap podman buildah
if podman image exists "$image"; then
  echo "==> image: base $image exists"
  exit 0
fi
rootfs=$(mktemp -d)
trap '$sudo rm -rf "$rootfs"' EXIT
echo "==> image: debootstrap bookworm (minbase, python3, python3-venv) into $rootfs"
$sudo debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
$sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
$sudo tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$image" >/dev/null
echo "==> image: base $image made"
