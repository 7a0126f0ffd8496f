# Sourced by the build-offline.sh scripts: what every image build takes, checks and ends
# with.
# image_options DEFAULT_IMAGE "$@"   parses [--arch amd64|arm64] [IMAGE] and sets
#   arch     Debian's name of the image's architecture (default: this machine's)
#   machine  the kernel's name of it (x86_64, aarch64), as wheel platforms spell it
#   image    the tag to load the image as (default DEFAULT_IMAGE)
#   mirror, security   Debian's archives (DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR)
# and checks that mmdebstrap is installed. die MESSAGE stops the script with it.
# load_image ROOTFS_TAR DIR   loads the rootfs as $image for $arch with DIR/Dockerfile's
#   ENV/USER/WORKDIR/CMD lines, and says how long since $start the build took.

die() { echo "build-offline.sh: $*" >&2; exit 1; }

image_options() {
  local usage="usage: build-offline.sh [--arch amd64|arm64] [IMAGE]"
  image=$1
  shift
  arch=$(dpkg --print-architecture)
  while [ $# -gt 0 ]; do
    case "$1" in
      --arch) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; arch=$2; shift 2 ;;
      --arch=*) arch=${1#--arch=}; shift ;;
      -*) echo "$usage" >&2; exit 2 ;;
      *) image=$1; shift ;;
    esac
  done
  case "$arch" in
    amd64|x86_64) arch=amd64 machine=x86_64 ;;
    arm64|aarch64) arch=arm64 machine=aarch64 ;;
    *) echo "build-offline.sh: unknown architecture '$arch': use amd64 or arm64" >&2; exit 2 ;;
  esac
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
}

load_image() {
  local previous
  previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  python3 "$(dirname "${BASH_SOURCE[0]}")/rootfs_image.py" --arch "$arch" \
    --dockerfile "$2/Dockerfile" "$1" "$image" >/dev/null
  # A rebuild leaves the old image untagged; drop it unless a container still uses it.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
  fi
  echo "built $image ($arch) in $(( $(date +%s) - start )) s"
}
