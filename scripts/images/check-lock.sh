#!/usr/bin/env bash
# Checks the Debian package versions a base root file system got (<name> <packages file>) against
# images/debian-packages.lock, so that a cold build on another day cannot silently ship other
# versions. LLMFLEET_IMAGES_UPDATE_LOCK=1 writes the new versions into the lock instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NAME="$1"
GOT="$2"
LOCK="$ROOT/images/debian-packages.lock"
touch "$LOCK"
want="$(awk -v n="$NAME" '$1 == n { print $2 }' "$LOCK")"
have="$(cat "$GOT")"
if [ "$want" = "$have" ]; then exit 0; fi
if [ -z "$want" ] || [ "${LLMFLEET_IMAGES_UPDATE_LOCK:-0}" = 1 ]; then
  { awk -v n="$NAME" '$1 != n' "$LOCK"; sed "s/^/$NAME /" "$GOT"; } | sort -k1,1 -s >"$LOCK.tmp"
  mv "$LOCK.tmp" "$LOCK"
  echo "images: recorded base-$NAME's Debian package versions in images/debian-packages.lock" >&2
  exit 0
fi
echo "images: base-$NAME got Debian packages other than images/debian-packages.lock pins:" >&2
diff <(echo "$want") <(echo "$have") | grep '^[<>]' | sed 's/^</  locked:/; s/^>/  got:   /' >&2
echo "(Debian's archive keeps only current versions: review and rerun with LLMFLEET_IMAGES_UPDATE_LOCK=1)" >&2
exit 1
