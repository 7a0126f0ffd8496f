# Sourced by the build-offline.sh scripts: make programs of another architecture run
# here through QEMU user emulation (binfmt_misc), which mmdebstrap needs to run the
# maintainer scripts of a foreign root filesystem.
# ensure_binfmt ARCH   (Debian's name: amd64 or arm64; a no-op for the host's own)

binfmt_ready() {
  # F (fix binary) opens the interpreter at registration, so foreign programs also run
  # in chroots and containers, where /usr/libexec/qemu-binfmt does not exist.
  local entry=/proc/sys/fs/binfmt_misc/$1
  [ -r "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags: .*F' "$entry"
}

ensure_binfmt() {
  local arch=$1 qemu
  [ "$arch" = "$(dpkg --print-architecture)" ] && return 0
  case "$arch" in
    arm64) qemu=qemu-aarch64 ;;
    amd64) qemu=qemu-x86_64 ;;
    *) echo "binfmt.sh: no emulator known for $arch (amd64 or arm64)" >&2; return 1 ;;
  esac
  binfmt_ready "$qemu" && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "binfmt.sh: $arch programs cannot run here: $qemu is not registered with \
binfmt_misc (with the F flag). Run this script as root to set it up." >&2
    return 1
  fi
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || {
      echo "binfmt.sh: cannot mount binfmt_misc at /proc/sys/fs/binfmt_misc" >&2; return 1; }
  fi
  if [ ! -e "/usr/share/binfmts/$qemu" ] || ! command -v update-binfmts >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support
  fi
  update-binfmts --enable "$qemu" || true
  binfmt_ready "$qemu" || {
    echo "binfmt.sh: $qemu is still not enabled with the F flag; see \
/proc/sys/fs/binfmt_misc/$qemu (another registration may be in the way)" >&2; return 1; }
}
