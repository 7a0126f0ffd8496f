#!/usr/bin/env bash
# Build the arm64 test image with no container registry: an arm64 Debian rootfs made
# by mmdebstrap under QEMU user emulation, turned into an image by `docker import`.
# One image plays two parts: it runs a worker whose platform.machine() is aarch64
# (run it with --user 0), and it is the builder image that worker starts builds from.
# Usage: build-offline.sh [--force] [IMAGE]   (default crossfarm/arm64-test:1)
# Needs root: it registers qemu-aarch64 with binfmt_misc when that is not yet done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
builder="$here/../builder"
force=0
image=crossfarm/arm64-test:1
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -*) echo "usage: build-offline.sh [--force] [IMAGE]" >&2; exit 2 ;;
    *) image=$arg ;;
  esac
done
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# pip inside the rootfs goes through the same TLS-inspecting proxy as the host, so the
# host's bundle replaces the rootfs's; it stays in the image for pip and cargo later.
export CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export WORKER_DEPS="celery[redis]>=5.4 redis>=5 docker>=7 boto3>=1.34 httpx>=0.27 pydantic>=2.6 pydantic-settings>=2.2"

die() { echo "build-offline.sh: $*" >&2; exit 1; }

binfmt_ready() {
  # F (fix binary) opens the interpreter at registration, so aarch64 programs also run
  # in chroots and containers, where /usr/libexec/qemu-binfmt does not exist.
  local entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
  [ -r "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags: .*F' "$entry"
}

ensure_binfmt() {
  binfmt_ready && return
  [ "$(id -u)" = 0 ] || die "aarch64 programs cannot run here: qemu-aarch64 is not registered \
with binfmt_misc (with the F flag). Run this script as root to set it up."
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || die "cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc"
  fi
  if [ ! -e /usr/share/binfmts/qemu-aarch64 ] || ! command -v update-binfmts >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support
  fi
  update-binfmts --enable qemu-aarch64 || true
  binfmt_ready || die "qemu-aarch64 is still not enabled with the F flag; see \
/proc/sys/fs/binfmt_misc/qemu-aarch64 (another registration may be in the way)"
}

# Before the image check: the registration is lost on reboot, and without it the
# image exists but nothing in it runs ("exec format error").
ensure_binfmt

docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"
if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image already exists (build-offline.sh --force rebuilds it)"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
[ -r "$CA_BUNDLE" ] || die "CA bundle $CA_BUNDLE is not readable (set CA_BUNDLE)"

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The builder's list minus its cross toolchain (names with a target triple, -cross or
# an :arch qualifier): on arm64 the native gcc and std are the aarch64 ones.
packages=$( { grep -v '^#' "$builder/packages.txt" | grep -Ev -- '-linux-gnu|-cross$|:'; \
              grep -v '^#' "$here/packages.txt"; } | paste -sd, -)

# EXTERNALLY-MANAGED goes after pip has run: the image is disposable, and tests install
# the crossfarm wheel into its system Python with a plain `python3 -m pip install`.
mmdebstrap --variant=apt --architectures=arm64 --include="$packages" \
  --customize-hook='cp "$CA_BUNDLE" "$1/etc/ssl/certs/ca-certificates.crt"' \
  --customize-hook='set -f; chroot "$1" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 \
      PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_ROOT_USER_ACTION=ignore \
      python3 -m pip install --quiet --break-system-packages $WORKER_DEPS' \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='chroot "$1" useradd --uid 10001 --create-home builder' \
  --customize-hook='mkdir -p "$1/work" "$1/cargo" && chown 10001:10001 "$1/work" "$1/cargo"' \
  --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"* "$1/etc/resolv.conf" "$1/etc/hostname"' \
  bookworm "$tmp/rootfs.tar" "deb $mirror bookworm main" "deb $security bookworm-security main"

# The builder Dockerfile's ENV/USER/WORKDIR lines, minus the cross toolchain's
# variables (named after a target triple): here aarch64 is the native target.
changes=()
while IFS= read -r line; do changes+=(--change "$line"); done \
  < <(grep -E '^(ENV|USER|WORKDIR) ' "$builder/Dockerfile" | grep -Evi 'unknown_linux_gnu')
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
docker import "${changes[@]}" "$tmp/rootfs.tar" "$image" >/dev/null
# A rebuild leaves the old 1 GB image untagged; drop it unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "built $image in $(( $(date +%s) - start )) s"
