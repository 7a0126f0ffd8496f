#!/usr/bin/env bash
# The builder with rustup's toolchain (see the Dockerfile), with no registry: the
# builder image (crossfarm/builder:1, `make image`) with this machine's rustup toolchain
# copied in at /opt/rust, first on PATH. Only what builds run is copied (bin, lib,
# libexec: rustc, cargo, rustdoc, the standard libraries installed, rust-lld), not the
# docs. The image is labelled with the toolchain's `rustc -V`, so a changed host
# toolchain is seen (`make images` rebuilds it then).
# Usage: build-offline.sh [IMAGE]   (default crossfarm/builder-rustup:1)
#   TOOLCHAIN  the rustup toolchain to copy (default: the one `rustc` runs here)
#   BUILDER    the image to add it to (default crossfarm/builder:1)
set -euo pipefail
die() { echo "build-offline.sh: $*" >&2; exit 1; }
image=${1:-crossfarm/builder-rustup:1}
builder=${BUILDER:-crossfarm/builder:1}
start=$(date +%s)

command -v rustc >/dev/null || die "no rustc here: install a toolchain with rustup"
sysroot=$(rustc ${TOOLCHAIN:+"+$TOOLCHAIN"} --print sysroot) \
  || die "rustc${TOOLCHAIN:+ +$TOOLCHAIN} cannot say its sysroot (is TOOLCHAIN installed?)"
[ -x "$sysroot/bin/rustc" ] && [ -x "$sysroot/bin/cargo" ] \
  || die "$sysroot has no bin/rustc and bin/cargo: not a rustup toolchain"
version=$("$sysroot/bin/rustc" -V)
docker image inspect "$builder" >/dev/null 2>&1 || die "$builder is missing: make image"

container=$(docker create --user 0:0 "$builder" true)
trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
toolchain_tar() { tar -C "$sysroot" --owner=0 --group=0 --transform 's,^,rust/,' -c bin lib libexec; }
toolchain_tar | docker cp - "$container:/opt"
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
docker commit \
  --change 'ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL io.crossfarm.toolchain=\"$version\"" \
  --change 'USER 10001' --change 'CMD []' "$container" "$image" >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
docker run --rm --network none "$image" sh -c 'rustc -V && cargo -V' >/dev/null \
  || die "$image: rustc or cargo does not run in it"
echo "built $image ($version) in $(( $(date +%s) - start )) s"
