#!/usr/bin/env bash
# Build the tiny test image `pacer/busybox:local` without pulling anything from a
# registry: the image is a single layer that holds Debian's statically linked
# busybox plus one symlink per applet.
#
# Usage: examples/docker/build-local-image.sh [--force] [--no-check]
#   --force     rebuild even if the image already exists
#   --no-check  skip the `echo` smoke test after building
# Environment:
#   PACER_BUSYBOX_IMAGE  image reference to create (default pacer/busybox:local)
#   DOCKER               docker client to use (default: docker)
#
# Exit status: 0 when the image exists afterwards, 1 on any failure
# (for example when no Docker engine is reachable).
set -euo pipefail

IMAGE="${PACER_BUSYBOX_IMAGE:-pacer/busybox:local}"
DOCKER="${DOCKER:-docker}"
FORCE=0
CHECK=1

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --no-check) CHECK=0 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-local-image: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "build-local-image: $*"; }
die() { echo "build-local-image: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

command -v "$DOCKER" >/dev/null 2>&1 || die "docker client '$DOCKER' not found"
if ! "$DOCKER" info >/dev/null 2>&1; then
  die "no Docker engine reachable (is dockerd running? see scripts/setup-test-env.sh)"
fi

if [ "$FORCE" -eq 0 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already exists (use --force to rebuild)"
  exit 0
fi

# Debian's busybox-static ships a fully static /bin/busybox, so it runs in an
# otherwise empty root filesystem. (The plain `busybox` package is dynamic.)
BUSYBOX=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  log "installing busybox-static with apt-get"
  apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null; }
  if ! apt_install; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_install
  fi
fi
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing after installing busybox-static"

ROOTFS="$(mktemp -d -t pacer-busybox-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

mkdir -p "$ROOTFS"/{bin,etc,root,tmp,www,proc,sys,dev,var/run,usr}
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
# Relative symlinks, one per applet, so the links stay valid inside the image.
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$ROOTFS/bin/$applet"
done
# Merged-/usr layout: every usual PATH entry resolves to /bin.
ln -s bin "$ROOTFS/sbin"
ln -s ../bin "$ROOTFS/usr/bin"
ln -s ../bin "$ROOTFS/usr/sbin"

cat > "$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$ROOTFS/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'pacer busybox test image' > "$ROOTFS/www/index.html"

# With --force, remember the old image so it does not linger as <none>:<none>.
old_id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"

log "importing $IMAGE ($("$BUSYBOX" --list | wc -l) applets)"
tar -C "$ROOTFS" --numeric-owner --owner=0 --group=0 -cf - . \
  | "$DOCKER" import \
      --change 'ENV PATH=/bin' \
      --change 'WORKDIR /' \
      --change 'CMD ["/bin/sh"]' \
      - "$IMAGE" >/dev/null

if [ "$CHECK" -eq 1 ]; then
  out="$("$DOCKER" run --rm "$IMAGE" sh -c 'echo busybox-ok')" \
    || die "smoke test failed: could not run a container from $IMAGE"
  [ "$out" = busybox-ok ] || die "smoke test printed '$out' instead of 'busybox-ok'"
fi

new_id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  "$DOCKER" rmi "$old_id" >/dev/null 2>&1 || log "note: old image $old_id is still in use, left in place"
fi

log "built $IMAGE"
