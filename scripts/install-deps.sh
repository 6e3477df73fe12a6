#!/usr/bin/env bash
# Installs the Debian packages edgespec needs to build and test. Idempotent: it installs only what is
# missing and says what it installs. Usage: scripts/install-deps.sh [--check] [--bench] [--aarch64]
#   --check    exit 1 (installing nothing) if something is missing.
#   --bench    also the benchmark extras (gnuplot for the serving curves under docs/).
#   --aarch64  also the aarch64 cross toolchain and qemu user-mode emulation (make cross-aarch64 /
#              make test-aarch64): on Debian 12 qemu-user provides /usr/bin/qemu-aarch64
#              (qemu-user-static only the *-static names).
set -euo pipefail

# libevent-dev ships libevent_openssl (event2/bufferevent_ssl.h); openssl (the CLI) makes the test certificates;
# clang: the libFuzzer targets (make fuzz); llvm: llvm-symbolizer, so sanitizer reports have file:line.
PKGS=(build-essential cmake pkg-config libcjson-dev libevent-dev libssl-dev openssl clang llvm python3 curl nodejs npm)
check=0
for a in "$@"; do
  case "$a" in
    --check) check=1 ;;
    --bench) PKGS+=(gnuplot-nox) ;;
    --aarch64) PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
    *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
  esac
done

# Tools that may come from elsewhere than Debian (NodeSource's nodejs bundles npm and conflicts with
# Debian's npm package): a working command counts as installed.
declare -A CMD_OF=([nodejs]=node [npm]=npm [curl]=curl)

missing=()
for p in "${PKGS[@]}"; do
  if [ -n "${CMD_OF[$p]:-}" ] && command -v "${CMD_OF[$p]}" >/dev/null 2>&1; then continue; fi
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
