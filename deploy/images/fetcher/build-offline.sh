#!/usr/bin/env bash
# Build the fetcher image with no registry, with the builder's script (mmdebstrap +
# rootfs_image.py), for this machine's architecture or the one --arch names.
# Usage: build-offline.sh [--arch amd64|arm64] [IMAGE]   (default crossfarm/fetcher:1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
args=()
image=crossfarm/fetcher:1
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) args+=(--arch "${2:?--arch needs amd64 or arm64}"); shift 2 ;;
    --arch=*) args+=("$1"); shift ;;
    *) image=$1; shift ;;
  esac
done
IMAGE_DIR=$here exec "$here/../builder/build-offline.sh" "${args[@]}" "$image"
