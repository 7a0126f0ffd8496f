#!/usr/bin/env bash
# Build the controller/worker image with no container registry: mmdebstrap makes a
# Debian rootfs of ARCH with python3 (packages.txt); pip, on this machine, builds the
# crossfarm wheel and fetches its dependencies as wheels for ARCH (--platform), so
# nothing Python runs emulated; rootfs_image.py loads the result as an ARCH image with
# the Dockerfile's ENV/USER/WORKDIR/CMD lines.
# Usage: build-offline.sh [--arch amd64|arm64] [IMAGE]
#   (default: this machine's architecture; crossfarm/crossfarm:0.1.0)
# EXTRAS (default all,postgres) picks the distribution's extras.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
images=$(cd "$here/.." && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=../offline.sh
. "$images/offline.sh"
image_options crossfarm/crossfarm:0.1.0 "$@"
extras=${EXTRAS:-all,postgres}

# Debian bookworm's python3 is 3.11: the wheels must be for that, whatever runs pip here.
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is missing on this machine"
# shellcheck source=../binfmt.sh
. "$images/binfmt.sh"
ensure_binfmt "$arch"

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The wheel from a copy, so the build leaves no build/ or *.egg-info in the checkout.
mkdir "$tmp/src"
cp -a "$repo/pyproject.toml" "$repo/README.md" "$repo/shared" "$repo/client" \
  "$repo/controller" "$repo/worker" "$tmp/src/"
find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
python3 -m pip wheel --quiet --no-deps --wheel-dir "$tmp/wheels" "$tmp/src"
wheel=$(ls "$tmp/wheels"/crossfarm-*.whl)

# Wheels for the image's platform and Python; bookworm's glibc is 2.36, so any
# manylinux tag up to 2_36 runs there.
platforms=()
for glibc in 2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17; do platforms+=(--platform "manylinux_${glibc}_$machine"); done
platforms+=(--platform "manylinux2014_$machine")
# pip evaluates environment markers with this machine's Python, not the image's 3.11.2:
# redis needs async-timeout below Python 3.11.3, which a newer Python here would skip.
marker_deps="async-timeout>=4.0.3"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
  --disable-pip-version-check --no-warn-conflicts --no-warn-script-location \
  --target "$tmp/site" "${platforms[@]}" --implementation cp --python-version 3.11.2 \
  --abi cp311 --only-binary=:all: "$wheel[$extras]" $marker_deps
# Console scripts name this machine's interpreter: point them at the image's.
mkdir -p "$tmp/bin"
if [ -d "$tmp/site/bin" ]; then
  for script in "$tmp/site/bin"/*; do
    [ -f "$script" ] || continue
    sed '1s|^#!.*python.*$|#!/usr/bin/python3|' "$script" > "$tmp/bin/$(basename "$script")"
  done
  chmod 755 "$tmp/bin"/*
  rm -rf "$tmp/site/bin"
fi
# Bytecode made here is valid there when this Python is a 3.11 too (one magic number);
# it spares every start of an emulated container the compile.
if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  python3 -m compileall -q -j 0 "$tmp/site" >/dev/null || true
fi

packages=$(grep -v '^#' "$here/packages.txt" | grep -v '^[[:space:]]*$' | paste -sd, -)
export SITE=$tmp/site BIN=$tmp/bin
mmdebstrap --variant=minbase --architectures="$arch" --include="$packages" \
  --customize-hook='mkdir -p "$1/usr/local/lib/python3.11/dist-packages" "$1/usr/local/bin"' \
  --customize-hook='cp -a "$SITE/." "$1/usr/local/lib/python3.11/dist-packages/"' \
  --customize-hook='cp -a "$BIN/." "$1/usr/local/bin/"' \
  --customize-hook='chroot "$1" useradd --uid 10001 --user-group --create-home --home-dir /home/crossfarm crossfarm' \
  --customize-hook='mkdir -p "$1/data" "$1/scratch" && chown 10001:10001 "$1/data" && chmod 1777 "$1/scratch"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"* "$1/etc/resolv.conf" "$1/etc/hostname"' \
  bookworm "$tmp/rootfs.tar" "deb $mirror bookworm main" "deb $security bookworm-security main"

load_image "$tmp/rootfs.tar" "$here"
