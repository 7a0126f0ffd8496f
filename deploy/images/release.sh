#!/usr/bin/env bash
# Build every crossfarm image for amd64 and arm64 with no registry to pull from, push
# them to REGISTRY, and join each image's two platforms in a manifest list, so that
# `docker pull REGISTRY/crossfarm/NAME:TAG` gives every host its native image.
# Usage: release.sh REGISTRY [TAG]    (make release-images REGISTRY=host:port [TAG=…])
#   REGISTRY  host:port[/path] of a registry (plain HTTP on a loopback address: the
#             engine and `docker manifest --insecure` allow it there)
#   TAG       default: the version in pyproject.toml
# Images: crossfarm (controller and worker), builder, fetcher, infra (Redis,
# PostgreSQL, SeaweedFS for compose). IMAGES="crossfarm builder" picks some.
# Each local build is named after a hash of its inputs (crossfarm-release/NAME:HASH-ARCH,
# local-build.sh, which `make images` uses too) and reused while they are unchanged;
# FRESH=1 rebuilds anyway (new Debian updates).
# Builds run two at a time (JOBS=2); arm64 runs under QEMU on an amd64 host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "release.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: release.sh REGISTRY [TAG]"
registry=${1%/}
tag=${2:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml" | head -1)}
[[ "$registry" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]] \
  || die "REGISTRY '$registry' is not host[:port][/path] (e.g. 127.0.0.1:5000)"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "TAG '$tag' is not a valid image tag"
names=${IMAGES:-crossfarm builder fetcher infra}
arches="amd64 arm64"
for name in $names; do
  [ -x "$here/$name/build-offline.sh" ] || die "no image '$name' (deploy/images/$name/build-offline.sh)"
done
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"
docker manifest --help >/dev/null 2>&1 || die "this docker CLI has no 'docker manifest' (Docker 20.10 or later)"

# Local builds are shared with `make images` (local-build.sh): named after a hash of
# their input files, reused while those are unchanged, so CI builds each image once.
declare -A local_names
for name in $names; do
  for arch in $arches; do
    local_names[$name/$arch]=$("$here/local-build.sh" --name "$name" "$arch")
  done
done
local_image() { echo "${local_names[$1/$2]}"; }

build_one() { "$here/local-build.sh" "$1" "$2"; }

# Two builds at a time (JOBS), the emulated arm64 ones first: they take several times
# longer, and one mmdebstrap mostly keeps one core busy.
start=$(date +%s)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
queue=()
for arch in arm64 amd64; do
  for name in builder crossfarm infra fetcher; do
    [[ " $names " == *" $name "* ]] && queue+=("$name/$arch")
  done
done
for job in "${queue[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n || true; done
  log=$logs/${job/\//-}.log
  ( rc=0; build_one "${job%/*}" "${job#*/}" > "$log" 2>&1 || rc=$?; echo "$rc" > "$log.rc" ) &
done
wait
failed=0
for job in "${queue[@]}"; do
  log=$logs/${job/\//-}.log
  if [ "$(cat "$log.rc" 2>/dev/null)" != 0 ]; then
    failed=1
    echo "release.sh: $job failed to build; the end of its log:" >&2
    tail -n 40 "$log" >&2
  else
    grep '^local-build.sh\|^built ' "$log" || true
  fi
done
[ "$failed" = 0 ] || exit 1
built=$(date +%s)

for name in $names; do
  target=$registry/crossfarm/$name:$tag
  refs=()
  for arch in $arches; do
    docker tag "$(local_image "$name" "$arch")" "$target-$arch"
    docker push --quiet "$target-$arch" >/dev/null || die "pushing $target-$arch failed"
    refs+=("$target-$arch")
  done
  docker manifest rm "$target" >/dev/null 2>&1 || true  # a list left by an earlier run
  docker manifest create --insecure "$target" "${refs[@]}" >/dev/null
  digest=$(docker manifest push --insecure --purge "$target")
  echo "release.sh: pushed $target ($arches) $digest"
done
echo "release.sh: built in $(( built - start )) s, pushed in $(( $(date +%s) - built )) s"
