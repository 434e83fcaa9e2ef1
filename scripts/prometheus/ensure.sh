#!/usr/bin/env bash
# Makes sure a real Prometheus server is installed (Debian's package) and prints its path.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
  echo "[prometheus] installing Debian's prometheus package (once)" >&2
  if [ "$(id -u)" -ne 0 ]; then echo "[prometheus] need root for apt-get; install the 'prometheus' package" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends prometheus >&2
fi
command -v prometheus
