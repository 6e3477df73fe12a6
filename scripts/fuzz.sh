#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each src/fuzz/fuzz_*.c
# target for FUZZ_SECONDS. GGUF targets are seeded with a small generated file, the GGUFs the test
# suite wrote (build/tmp) and the converted test models (build/models; big files cut to 64 KiB);
# fuzz_proto with one valid frame of every type, fuzz_oai with requests of both endpoints.
# Crashing inputs land in build-fuzz/artifacts/. usage: scripts/fuzz.sh [FUZZ_SECONDS]  (default 60)
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=$root/build-fuzz
max_len=65536

CC=${CC:-clang} cmake -S "$root" -B "$bdir" -DES_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
targets=()
for src in "$root"/src/fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  targets+=("$(basename "$src" .c)")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets in src/fuzz" >&2; exit 1; }
cmake --build "$bdir" -j2 --target "${targets[@]}"

# little-endian integers and gguf strings for the generated seed
le() { local v=$1 n=$2 i; for ((i = 0; i < n; i++)); do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
gstr() { le ${#1} 8; printf '%s' "$1"; }
pad_to() { local sz; sz=$(stat -c %s "$1"); head -c $((($2 - sz % $2) % $2)) /dev/zero >>"$1"; }

gguf_seeds() { # DIR: a hand-made valid file (every section present) plus any GGUFs we have
  local dir=$1 f=$1/generated.gguf
  {
    printf 'GGUF'; le 3 4; le 2 8; le 4 8
    gstr general.architecture; le 8 4; gstr llama
    gstr general.alignment; le 4 4; le 32 4
    gstr tokenizer.ggml.tokens; le 9 4; le 8 4; le 3 8; gstr '<s>'; gstr a; gstr bc
    gstr tokenizer.ggml.scores; le 9 4; le 6 4; le 3 8; le 0 4; le 1065353216 4; le 3212836864 4
    gstr token_embd.weight; le 2 4; le 8 8; le 3 8; le 0 4; le 0 8
    gstr blk.0.attn_q.weight; le 1 4; le 32 8; le 8 4; le 96 8
  } >"$f"
  pad_to "$f" 32
  head -c 96 /dev/urandom >>"$f"   # f32 [8, 3]
  head -c 34 /dev/urandom >>"$f"   # q8_0 [32]
  pad_to "$f" 32
  local g
  for g in "$root"/build/models/*.gguf "$root"/build/tmp/*.gguf; do
    [ -f "$g" ] || continue
    head -c $max_len "$g" >"$dir/$(basename "$g")"
  done
}

proto_seeds() { # DIR: one valid payload of every frame type, as "type byte + payload" and as a whole frame
  local dir=$1
  emit() { # NAME TYPE SESSION, payload on stdin
    local pl n
    pl=$(mktemp)
    cat >"$pl"
    n=$(stat -c %s "$pl")
    { le "$2" 1; cat "$pl"; } >"$dir/$1.typed"
    { le "$n" 4; le "$2" 1; le 1 1; le 0 2; le "$3" 4; cat "$pl"; } >"$dir/$1.frame"
    rm -f "$pl"
  }
  # floats as IEEE-754 bits: 1.0 = 1065353216, 0.5 = 1056964608, 0.7 = 1060320051, 0.05 = 1028443341
  { le 1 2; le 1 2; le 4 2; printf edge; le 1 1; le 12345 8; le 512 4; le 1 4; le 2 4; le 3 2; printf key; } | emit hello 1 0
  { le 1 2; le 5 2; printf serve; le 12345 8; le 512 4; le 1 4; le 2 4; le 2048 4; le 64 4; le 1024 4; le 1048576 4; le 7 4
    le 1 1; } | emit welcome 2 0
  { le 0 1; le 2 1; le 64 4; le 1060320051 4; le 1065353216 4; le 1028443341 4; le 40 4; le 42 8; le 1 2; le 2 4; le 0 4
    le 3 4; le 1 4; le 20 4; le 30 4; } | emit open 3 7
  { le 1 1; le 0 1; le 64 4; le 0 4; le 1065353216 4; le 0 4; le 0 4; le 0 8; le 0 2; le 1 4; le 11 4; printf 'Once upon a'; } |
    emit open_text 3 8
  { le 5 4; le 64 4; le 2048 4; } | emit opened 4 7
  { le 0 4; le 0 1; le 3 2; le 10 4; le 65535 2; le 11 4; le 0 2; le 12 4; le 65535 2; } | emit verify 5 7
  { le 1 4; le 1 1; le 2 2; le 10 4; le 65535 2; le 11 4; le 0 2
    le 2 1; le 10 4; le 1056964608 4; le 12 4; le 1056964608 4; le 1 1; le 11 4; le 1065353216 4; le 0 1; } | emit verify_q 5 7
  { le 0 4; le 0 1; le 2 2; le 0 2; le 1 2; le 3 2; le 10 4; le 11 4; le 5 4; le 100 4; le 2000 4; le 16 2; } | emit verdict 6 7
  { le 1 1; le 2 2; le 5 4; le 2 4; } | emit tokens 7 8
  { le 2 1; le 64 4; } | emit close 8 7
  { le 5 2; le 4 2; printf busy; } | emit error 9 0
  le 1234567 8 | emit ping 10 0
  le 1234567 8 | emit pong 11 0
}

oai_seeds() { # DIR: requests for both endpoints (byte 0: 0 completions, 1 chat)
  printf '\0{"prompt":"Once upon a time","max_tokens":16,"temperature":0,"stop":["\\n\\n","END"]}' >"$1/completion"
  printf '\0{"prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true},"seed":5}' >"$1/ids"
  printf '\1{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi \xc3\xa9"}]}],"stop":"a"}' >"$1/chat"
  printf '\1{"messages":[{"role":"assistant","content":null}],"max_completion_tokens":3,"top_p":0.5}' >"$1/chat2"
}

rc=0
for t in "${targets[@]}"; do
  corpus=$bdir/corpus/$t seeds=$bdir/seeds/$t
  mkdir -p "$corpus" "$seeds" "$bdir/artifacts"
  extra=()
  if [[ $t == *gguf* ]]; then
    gguf_seeds "$seeds"
    printf '"GGUF"\n"general.alignment"\n"general.architecture"\n"tokenizer.ggml.tokens"\n"\\x03\\x00\\x00\\x00"\n' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  [[ $t == fuzz_proto ]] && proto_seeds "$seeds"
  if [[ $t == fuzz_oai ]]; then
    oai_seeds "$seeds"
    printf '%s\n' '"prompt"' '"messages"' '"role"' '"content"' '"stop"' '"max_tokens"' '"temperature"' \
      '"stream_options"' '"include_usage"' '"\\u00e9"' '"\xf0\x9f\x98\x80"' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  echo "== $t: ${secs}s"
  if ! "$bdir/$t" -max_total_time="$secs" -max_len=$max_len -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$bdir/artifacts/$t-" "${extra[@]}" "$corpus" "$seeds"; then
    echo "fuzz.sh: $t FAILED (crashing input in $bdir/artifacts/)" >&2
    rc=1
  fi
done
exit $rc
