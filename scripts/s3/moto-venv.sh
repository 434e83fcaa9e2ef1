#!/usr/bin/env bash
# Installs moto[server] (a real S3-compatible HTTP server, from PyPI) into a cached venv and
# prints the path of its moto_server binary. Idempotent: a finished venv is marked and reused.
set -euo pipefail
MOTO_VERSION="${MOTO_VERSION:-5.1.22}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
VENV="$CACHE/venvs/moto-$MOTO_VERSION"
if [ ! -f "$VENV/.ready" ]; then
  mkdir -p "$CACHE/venvs"
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp" >&2
  "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  rm -rf "$VENV"
  mv "$VENV.tmp" "$VENV"
  # venv scripts carry absolute shebangs: rebuild them at the final path.
  python3 -m venv --upgrade "$VENV" >&2
  sed -i "1s|.*|#!$VENV/bin/python|" "$VENV"/bin/moto_server
  touch "$VENV/.ready"
fi
echo "$VENV/bin/moto_server"
