#!/usr/bin/env bash
# Installs the Debian packages edgespec needs to build and test. Idempotent: it installs only what is
# missing and says what it installs. Usage: scripts/install-deps.sh [--check] [--bench] [--aarch64] [--venv DIR]
#   --check    exit 1 (installing nothing) if something is missing.
#   --venv DIR the Python virtual environment of the test and bench tools (default build/venv): created
#              with Debian's python3, filled from scripts/requirements-test.txt (every version pinned),
#              and made anew only when that file changes (a stamp inside DIR records its hash). Never
#              system-wide. --venv none skips it.
#   --bench    also the benchmark extras (gnuplot for the serving curves under docs/).
#   --aarch64  also the aarch64 cross toolchain and qemu user-mode emulation (make cross-aarch64 /
#              make test-aarch64): on Debian 12 qemu-user provides /usr/bin/qemu-aarch64
#              (qemu-user-static only the *-static names).
set -euo pipefail

# libevent-dev ships libevent_openssl (event2/bufferevent_ssl.h); openssl (the CLI) makes the test certificates;
# clang: the libFuzzer targets (make fuzz); llvm: llvm-symbolizer, so sanitizer reports have file:line.
# python3-venv: build/venv (the official openai client, tokenizers, jinja2, numpy, gguf, from PyPI);
# nodejs: the benchmark drivers under scripts/*.mjs, which use only node's built-ins;
# haproxy: the scale-out deployment (deploy/haproxy.cfg) that tests/test_haproxy.sh runs.
# systemd: systemd-analyze, which tests/test_deploy.sh runs on deploy/edgespec.service.
# chromium: headless, it loads the chat page (GET /) in tests/test_chat_page.sh.
# The Vulkan device backend: libvulkan-dev (the loader and headers), glslc (compiles src/backend/vulkan/*.comp
# at build time), mesa-vulkan-drivers (lavapipe, the CPU Vulkan driver the device tests run on) and
# vulkan-validationlayers (the tests fail on any validation message).
PKGS=(build-essential cmake pkg-config libcjson-dev libevent-dev libssl-dev openssl clang llvm python3 python3-venv curl nodejs haproxy
      systemd libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers chromium)
root=$(cd "$(dirname "$0")/.." && pwd)
check=0
venv=$root/build/venv
while [ $# -gt 0 ]; do
  a=$1
  shift
  case "$a" in
    --check) check=1 ;;
    --venv)
      [ $# -gt 0 ] || { echo "install-deps: --venv needs a folder (or 'none')" >&2; exit 2; }
      venv=$1
      shift
      ;;
    --bench) PKGS+=(gnuplot-nox) ;;
    --aarch64) PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
    *) echo "install-deps: unknown option $a" >&2; exit 2 ;;
  esac
done

# Tools that may come from elsewhere than Debian (NodeSource's nodejs, say): a working command counts
# as installed.
declare -A CMD_OF=([nodejs]=node [curl]=curl)

missing=()
for p in "${PKGS[@]}"; do
  if [ -n "${CMD_OF[$p]:-}" ] && command -v "${CMD_OF[$p]}" >/dev/null 2>&1; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

req=$root/scripts/requirements-test.txt
venv_ok() { # the venv exists and was filled from this very requirements file
  [ "$venv" = none ] && return 0
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$(sha256sum <"$req" | cut -d' ' -f1)" ]
}

if [ "$check" = 1 ]; then
  rc=0
  [ ${#missing[@]} -eq 0 ] || { echo "missing packages: ${missing[*]}" >&2; rc=1; }
  venv_ok || { echo "missing or stale Python venv: $venv (from $req)" >&2; rc=1; }
  exit $rc
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2 || true
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! venv_ok; then
  # Debian's interpreter, not whatever python3 comes first on PATH: the venv must not depend on a
  # per-user installation that a fresh machine lacks.
  echo "install-deps: creating the Python venv $venv from $(basename "$req")" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv" >&2
  if ! "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r "$req" >&2; then
    echo "install-deps: pip could not install $req into $venv (is PyPI reachable?)" >&2
    rm -rf "$venv"
    exit 1
  fi
  sha256sum <"$req" | cut -d' ' -f1 >"$venv/.requirements.sha256"
  echo "install-deps: venv ready: $("$venv/bin/python" -c 'import openai, tokenizers, jinja2, numpy, gguf; print("openai", openai.__version__, "tokenizers", tokenizers.__version__)')" >&2
fi
