#!/usr/bin/env bash
# Installs the Debian packages edgespec needs to build and test. Idempotent: it installs only what is
# missing and says what it installs. Usage: scripts/install-deps.sh [--check] [--bench]
#   --check  exit 1 (installing nothing) if something is missing.
#   --bench  also the benchmark extras (gnuplot for the serving curves under docs/).
set -euo pipefail

PKGS=(build-essential cmake pkg-config libcjson-dev libevent-dev libssl-dev clang python3 curl nodejs npm)
check=0
for a in "$@"; do
  case "$a" in
    --check) check=1 ;;
    --bench) PKGS+=(gnuplot-nox) ;;
    *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$check" = 1 ]; then
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
