#!/usr/bin/env bash
# Build the rustc 1.63 builder image with no registry, for this machine's architecture,
# with the builder's script (mmdebstrap + docker import).
# Usage: build-offline.sh [IMAGE]   (default crossfarm/builder-1.63:1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE_DIR=$here ARCHITECTURES=$(dpkg --print-architecture) \
  exec "$here/../builder/build-offline.sh" "${1:-crossfarm/builder-1.63:1}"
