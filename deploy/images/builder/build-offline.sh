#!/usr/bin/env bash
# Build the builder image with no container registry: mmdebstrap makes a Debian
# rootfs from packages.txt, `docker import` turns it into an image, and the
# Dockerfile's ENV/USER/WORKDIR lines become --change options.
# Usage: build-offline.sh [IMAGE]   (default crossfarm/builder:1)
# IMAGE_DIR (another image's folder: its packages.txt and Dockerfile) and ARCHITECTURES
# let the other images reuse this script (deploy/images/fetcher/build-offline.sh).
set -euo pipefail
here=${IMAGE_DIR:-$(cd "$(dirname "$0")" && pwd)}
image=${1:-crossfarm/builder:1}
architectures=${ARCHITECTURES:-amd64,arm64}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v mmdebstrap >/dev/null || { echo "build-offline.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
packages=$(grep -v '^#' "$here/packages.txt" | paste -sd, -)

mmdebstrap --variant=apt --architectures="$architectures" --include="$packages" \
  --customize-hook='chroot "$1" useradd --uid 10001 --create-home builder' \
  --customize-hook='mkdir -p "$1/work" "$1/cargo" && chown 10001:10001 "$1/work" "$1/cargo"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
  bookworm "$tmp/rootfs.tar" "deb $mirror bookworm main" "deb $security bookworm-security main"

changes=()
while IFS= read -r line; do changes+=(--change "$line"); done \
  < <(grep -E '^(ENV|USER|WORKDIR) ' "$here/Dockerfile")
docker import "${changes[@]}" "$tmp/rootfs.tar" "$image" >/dev/null
echo "built $image"
