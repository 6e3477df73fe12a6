#!/usr/bin/env bash
# bench-device.sh — the Vulkan backend on a GPU: decode tokens/s against the memory-bandwidth bound,
# and the verification cost curve (k = 1 … 256 rows in one pass, relative to one decode step), on the
# TinyLlama-1.1B shape (synthetic weights) and the real Qwen2.5-Coder 1.5B target when it is cached;
# then APEX's case (issue 17): a device KV budget that holds N sessions and 2N / 4N clients, two KV
# tiers (`bench serve --device-kv-memory`, kv "hybrid") against device-only admission at N (kv
# "device_only", vLLM's), on the first model.
# Meant for a machine with a GPU and no network: it needs only the built tree.
#
# usage: scripts/bench-device.sh [--build DIR] [--device vulkan:N] [--bw-gbs G] [--ks LIST]
#                                [--models "A.gguf B.gguf"] [--out FILE] [--apex-sessions N] [--no-apex]
#        scripts/bench-device.sh --pack [--build DIR]
#   --apex-sessions  N, the sessions the device KV budget holds (default 8; 0 or --no-apex: skip)
#   --pack     run on the build machine: copies its Vulkan loader (libvulkan.so.1) into DIR/vulkan, so
#              carrying DIR brings the loader to a GPU machine that has the NVIDIA driver but no loader.
#   --bw-gbs   the device's memory bandwidth for the bound (default: from the device name for H100 /
#              H200 / A100; otherwise required).
#   --models   GGUF files to measure instead of the defaults.
# The driver's ICD: when no ICD file names NVIDIA's library but libGLX_nvidia.so.0 is installed, one is
# written to a temporary folder and VK_ICD_FILENAMES points at it. Results go to stdout and, as JSON
# lines, to --out (default docs/bench/device-<date>.jsonl). Each bench run is capped at 150 s, so the
# whole script stays under 5 minutes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build device=vulkan:0 bw= ks=1,2,4,8,16,32,64,128,256 models= out= pack=0 apex_n=8
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --bw-gbs) bw=$2; shift 2 ;;
    --ks) ks=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --pack) pack=1; shift ;;
    --apex-sessions) apex_n=$2; shift 2 ;;
    --no-apex) apex_n=0; shift ;;
    *) echo "bench-device: unknown option $1" >&2; exit 2 ;;
  esac
done

case "$apex_n" in ''|*[!0-9]*) echo "bench-device: --apex-sessions takes a number of sessions (0: skip), not '$apex_n'" >&2; exit 2 ;; esac

if [ "$pack" = 1 ]; then
  lib=$(ldconfig -p | sed -n 's|.*libvulkan.so.1 (libc6,x86-64) => \(.*\)|\1|p' | sed -n 1p)
  [ -n "$lib" ] || { echo "bench-device: no libvulkan.so.1 here to pack (scripts/install-deps.sh installs it)" >&2; exit 1; }
  mkdir -p "$build/vulkan"
  cp -L "$lib" "$build/vulkan/libvulkan.so.1"
  echo "bench-device: packed $lib into $build/vulkan/"
  exit 0
fi

bin=$build/edgespec
[ -x "$bin" ] || { echo "bench-device: no $bin (make first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# the loader: the system's, else the packed copy (ldconfig's list read whole: grep -q closing the pipe
# early would fail the pipeline under pipefail)
libs=$(ldconfig -p 2>/dev/null || true)
if ! grep -q 'libvulkan.so.1 ' <<<"$libs"; then
  [ -f "$build/vulkan/libvulkan.so.1" ] || { echo "bench-device: no Vulkan loader here and none packed (run --pack where it was built)" >&2; exit 1; }
  export LD_LIBRARY_PATH=$build/vulkan${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# the NVIDIA ICD
if ! grep -lqs nvidia /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null && grep -q libGLX_nvidia.so.0 <<<"$libs"; then
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libGLX_nvidia.so.0","api_version":"1.3.0"}}\n' >"$tmp/nvidia_icd.json"
  export VK_ICD_FILENAMES=$tmp/nvidia_icd.json
fi

"$bin" devices
"$bin" devices --json >"$tmp/devices.json"
idx=${device#vulkan:}
[ "$idx" = vulkan ] && idx=0
name=$(python3 -c 'import json,sys; d=[x for x in json.load(open(sys.argv[1]))["devices"] if x["backend"]=="vulkan" and x["index"]==int(sys.argv[2])]; print(d[0]["name"] if d else "")' "$tmp/devices.json" "$idx")
[ -n "$name" ] || { echo "bench-device: no Vulkan device $device" >&2; exit 1; }
if [ -z "$bw" ]; then
  case "$name" in
    *H200*) bw=4800 ;;
    *H100*PCIe*) bw=2000 ;;
    *H100*) bw=3350 ;;
    *A100*80GB*) bw=2039 ;;
    *A100*) bw=1555 ;;
    *) echo "bench-device: give --bw-gbs for $name" >&2; exit 2 ;;
  esac
fi
echo "device $device: $name, bound from $bw GB/s"

if [ -z "$models" ]; then
  echo "synthesising the TinyLlama-1.1B shape (q8_0, random weights)..."
  timeout 120 "$bin" synth --random --shape tinyllama-1.1b --type q8_0 -o "$tmp/tinyllama-q8_0.gguf" >/dev/null
  models=$tmp/tinyllama-q8_0.gguf
  real=${EDGESPEC_CACHE:-$HOME/.cache/edgespec}/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
  [ -f "$real" ] && models="$models $real" || echo "(the real 1.5B target is not cached: make models-real where there is a network)"
fi
out=${out:-$root/docs/bench/device-$(date +%F).jsonl}
mkdir -p "$(dirname "$out")"
for m in $models; do
  echo "== $m"
  if timeout 150 "$bin" bench -m "$m" --device "$device" --n-prompt 128 --n-gen 64 --ks "$ks" --reps 3 --kv-type f32 --json \
    >"$tmp/b.json" 2>"$tmp/b.err"; then
    python3 - "$tmp/b.json" "$bw" "$name" "$out" <<'PY'
import json, sys
b = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
bw, name, out = float(sys.argv[2]), sys.argv[3], sys.argv[4]
bound = bw * 1e9 / b["weight_bytes_per_token"]
dec = b["decode_tokens_per_second"]
step = 1.0 / dec
print(f"decode   {dec:9.1f} tok/s  bound {bound:9.1f} tok/s  -> {100 * dec / bound:5.1f} % (goal >= 60 %)")
print(f"prefill  {b['prefill_tokens_per_second']:9.1f} tok/s")
print("verify   k    ms      / decode step")
for v in b["verify"]:
    mark = "  (goal <= 2 at k=64)" if v["k"] == 64 else ""
    print(f"         {v['k']:<4} {v['ms']:8.3f} {v['ms'] / 1e3 / step:8.2f}{mark}")
b.update({"device_name": name, "bandwidth_gbs": bw, "decode_bound_tokens_per_second": bound})
with open(out, "a") as f:
    f.write(json.dumps(b) + "\n")
PY
  else
    echo "bench failed or ran out of time: $(head -c 400 "$tmp/b.err")"
  fi
done

# APEX: the budget is N sessions of prompt + 64 generated tokens (+ a page), f16 rows
first=${models%% *}
if [ "$apex_n" -gt 0 ]; then
  echo "== APEX on $first: device KV for $apex_n sessions, $((2 * apex_n)) and $((4 * apex_n)) clients"
  "$bin" info "$first" --json --no-tensors >"$tmp/info.json"
  budget=$(python3 - "$tmp/info.json" "$apex_n" <<'PY'
import json, sys
md = json.load(open(sys.argv[1]))["metadata"]
arch = md["general.architecture"]
g = lambda k: md[f"{arch}.{k}"]
n_head = g("attention.head_count")
head_dim = md.get(f"{arch}.attention.key_length", g("embedding_length") // n_head)
kv_tok = g("block_count") * 2 * md.get(f"{arch}.attention.head_count_kv", n_head) * head_dim * 2  # f16 K and V
per_sess = (128 + 64 + 16) * kv_tok  # the longest prompt is about 128 tokens; 64 generated; a page of tree
print(int(sys.argv[2]) * per_sess)
PY
)
  echo "device KV budget: $budget bytes"
  if timeout 200 "$bin" bench serve -m "$first" --device "$device" --device-kv-memory "$budget" --kv-type f16 --modes ar \
    --clients $((2 * apex_n)),$((4 * apex_n)) --n-gen 64 --threads 8 --json >"$tmp/apex.json" 2>"$tmp/apex.err"; then
    python3 - "$tmp/apex.json" "$name" "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
pts = {(x["clients"], x["kv"]): x for x in r["results"]}
print("clients  hybrid tok/s  device_only tok/s  ratio   ITL p99 hybrid / device_only (ms)  plans")
for c in sorted({c for c, _ in pts}):
    h, d = pts.get((c, "hybrid")), pts.get((c, "device_only"))
    if not h or not d: continue
    print(f"{c:7d}  {h['tokens_per_s_wall']:12.1f}  {d['tokens_per_s_wall']:17.1f}  {h['tokens_per_s_wall'] / d['tokens_per_s_wall']:5.2f}x"
          f"  {h['itl_p99_ms']:10.1f} / {d['itl_p99_ms']:.1f}  {h.get('plans')}")
r["device_name"] = sys.argv[2]
r["what"] = "APEX (issue 17): two KV tiers against device-only admission, scripts/bench-device.sh"
with open(sys.argv[3], "a") as f:
    f.write(json.dumps(r) + "\n")
PY
  else
    echo "APEX bench failed or ran out of time: $(head -c 400 "$tmp/apex.err")"
  fi
fi
echo "results appended to $out"
