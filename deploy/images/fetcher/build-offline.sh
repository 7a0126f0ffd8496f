#!/usr/bin/env bash
# Build the fetcher image with no registry, for this machine's architecture only, with
# the builder's script (mmdebstrap + docker import).
# Usage: build-offline.sh [IMAGE]   (default crossfarm/fetcher:1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE_DIR=$here ARCHITECTURES=$(dpkg --print-architecture) \
  exec "$here/../builder/build-offline.sh" "${1:-crossfarm/fetcher:1}"
