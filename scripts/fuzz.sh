#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each src/fuzz/fuzz_*.c
# target for FUZZ_SECONDS. GGUF targets are seeded with a small generated file, the GGUFs the test
# suite wrote (build/tmp) and the converted test models (build/models; big files cut to 64 KiB);
# fuzz_proto with one valid frame of every type, fuzz_hfconfig with the stored configs and a key dictionary, fuzz_oai with requests of both endpoints, fuzz_grammar with
# schemas (its regression inputs), fuzz_jinja with the chat templates of tests/data/chat-templates, fuzz_session
# with recorded sessions (its model: EDGESPEC_FUZZ_MODEL, default build/models/stories260K.gguf).
# Crashing inputs land in build-fuzz/artifacts/. usage: scripts/fuzz.sh [FUZZ_SECONDS]  (default 60);
# FUZZ_TARGETS="fuzz_proto fuzz_session" runs only the targets named.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=$root/build-fuzz
max_len=65536

CC=${CC:-clang} cmake -S "$root" -B "$bdir" -DES_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
targets=()
for src in "$root"/src/fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  t=$(basename "$src" .c)
  # FUZZ_TARGETS="fuzz_proto fuzz_session": only those (default: all)
  if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $t "* ]]; then continue; fi
  targets+=("$t")
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
  # EARLY (protocol version 2): round 3, exit layer 4, path 0,2, tokens 10 11 12
  { le 3 4; le 4 2; le 2 2; le 0 2; le 2 2; le 3 2; le 10 4; le 11 4; le 12 4; } | emit early 12 7
  # version 4: OPEN with logprobs (top 2) and a schema after 1 output token; VERDICT and TOKENS with
  # their log-probability blocks (-0.5 = 3204448256, -1.0 = 3212836864)
  { le 0 1; le 0 1; le 8 4; le 0 4; le 1065353216 4; le 0 4; le 0 4; le 0 8; le 0 2; le 24 4; le 2 4; le 1 4; le 20 4
    le 2 1; le 2 1; le 1 4; le 14 4; printf '{"enum":["a"]}'; } | emit open_api 3 9
  { le 0 4; le 0 1; le 0 2; le 1 2; le 10 4; le 0 4; le 0 4; le 0 2; le 3204448256 4; le 1 1; le 10 4; le 3204448256 4; } |
    emit verdict_lp 6 9
  { le 0 1; le 2 2; le 5 4; le 6 4; le 3212836864 4; le 0 1; le 3204448256 4; le 2 1; le 6 4; le 3204448256 4; le 5 4
    le 3212836864 4; } | emit tokens_lp 7 9
}

oai_seeds() { # DIR: requests for both endpoints (byte 0: 0 completions, 1 chat)
  printf '\0{"prompt":"Once upon a time","max_tokens":16,"temperature":0,"stop":["\\n\\n","END"]}' >"$1/completion"
  printf '\0{"prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true},"seed":5}' >"$1/ids"
  printf '\1{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi \xc3\xa9"}]}],"stop":"a"}' >"$1/chat"
  printf '\1{"messages":[{"role":"assistant","content":null}],"max_completion_tokens":3,"top_p":0.5}' >"$1/chat2"
}

session_seeds() { # DIR: programs for fuzz_session (the byte code is described in src/fuzz/fuzz_session.c:
  # op byte = connection (high nibble % 3) and operation (low nibble): 0 HELLO, 2 OPEN, 4 VERIFY, 6 CLOSE,
  # 7 PING, 8 client ERROR, 9 raw frame, 10 raw bytes, 11 EOF, 12..15 scheduler steps)
  local d=$1
  local hello='\x00\x00' hello_draft='\x00\x08' prompt='\x05\x00\x10\x20\x31\x40' steps='\x0f\x0f\x0f'
  # AR session (mode 1, greedy, 8 tokens), run to the end, then a PING and CLOSE of a finished id
  printf "${hello}\x02\x01\x01\x08\x00\x00${prompt}${steps}${steps}\x07\x01\x02\x03\x04\x06\x01" >"$d/ar"
  # edge session (greedy): two rounds of 3-node trees at the rounds the verdicts announce, then CLOSE
  local tree='\x04\x02\x03\x10\x00\x11\x01\x12\x00'
  printf "${hello_draft}\x02\x02\x00\x10\x00\x00${prompt}${steps}${tree}${steps}${tree}${steps}\x06\x02" >"$d/edge"
  # edge session, rejection rule at temperature 0.8, trees with proposal distributions
  local qtree='\x04\x02\x0c\x10\x00\x11\x01\x12\x00'
  printf "${hello_draft}\x02\x02\x28\x10\x07\x00${prompt}${steps}${qtree}${steps}${qtree}${steps}" >"$d/rejection"
  # two connections, three sessions (one busy), one client vanishing mid-prefill
  printf "${hello}\x10\x00\x02\x01\x01\x10\x00\x00\x27\x00${prompt}\x12\x02\x00\x10\x00\x00${prompt}\x12\x03\x01\x10\x00\x00${prompt}\x0c\x1b${steps}\x14\x02\x01\x10\x00${steps}" >"$d/two_conns"
  # refused handshakes and protocol errors: wrong key, wrong fingerprint, OPEN before HELLO, garbage
  printf "\x02\x01\x01\x08\x00\x00${prompt}\x10\x05\x20\x0a\x0b\x00" >"$d/refusals"
  printf "${hello}\x09\x05\x01\x04\x01\x02\x03\x04\x09\x63\x00\x00\x0a\x05\x00\x00\x00\x10\x03\x04\x01\x80\x07\x00\x00\x00\x00" >"$d/garbage"
  # text prompt, AR with sampling and a stop token, a client ERROR ending it
  printf "${hello}\x02\x03\x21\x10\x05\x01\x10\x80\x0f\x08\x03\x0f" >"$d/text"
  # version 4: an edge session with logprobs (3 alternatives) and a JSON-object grammar, two rounds;
  # then an AR session whose schema the server cannot enforce (refused with the reason)
  local hello4='\x00\x78'
  printf "${hello4}\x02\x02\x00\x10\x00\x33${prompt}${steps}${tree}${steps}${tree}${steps}\x02\x03\x01\x08\x00\x3c${prompt}${steps}" >"$d/api"
}

export EDGESPEC_FUZZ_MODEL=${EDGESPEC_FUZZ_MODEL:-$root/build/models/stories260K.gguf}
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
  if [[ $t == fuzz_hfconfig ]]; then # seeds: tests/data/fuzz-regress/fuzz_hfconfig (below); keys as a dictionary
    printf '%s\n' '"model_type"' '"llama"' '"qwen2"' '"hidden_size"' '"intermediate_size"' '"num_hidden_layers"' \
      '"num_attention_heads"' '"num_key_value_heads"' '"vocab_size"' '"head_dim"' '"rope_theta"' '"rms_norm_eps"' \
      '"rope_scaling"' '"tie_word_embeddings"' '"hidden_act"' '"silu"' '"max_position_embeddings"' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  [[ $t == fuzz_session ]] && session_seeds "$seeds"
  if [[ $t == fuzz_grammar ]]; then # seeds: tests/data/fuzz-regress/fuzz_grammar (below); schema keywords as a dictionary
    printf '%s\n' '"type"' '"object"' '"properties"' '"required"' '"items"' '"enum"' '"anyOf"' '"$ref"' '"$defs"' \
      '"additionalProperties"' '"minItems"' '"maxItems"' '"const"' '"integer"' '"number"' '"string"' '"boolean"' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  if [[ $t == fuzz_jinja ]]; then # seeds: the chat templates the tests render; Jinja keywords as a dictionary
    cp "$root"/tests/data/chat-templates/*.jinja "$seeds/"
    printf '%s\n' '"{%"' '"%}"' '"{{"' '"}}"' '"{%-"' '"-%}"' '"for"' '"endfor"' '"if"' '"elif"' '"else"' '"endif"' '"set"' \
      '"namespace("' '"macro"' '"endmacro"' '"loop.index0"' '"|tojson"' '"|trim"' '"is defined"' '"[::-1]"' '"messages"' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  if [[ $t == fuzz_oai ]]; then
    oai_seeds "$seeds"
    printf '%s\n' '"prompt"' '"messages"' '"role"' '"content"' '"stop"' '"max_tokens"' '"temperature"' \
      '"stream_options"' '"include_usage"' '"\\u00e9"' '"\xf0\x9f\x98\x80"' >"$bdir/$t.dict"
    extra+=(-dict="$bdir/$t.dict")
  fi
  # inputs kept as regression tests (tests/test_fuzz_regress.c) are seeds too
  # (after the corpus dir: libFuzzer writes new inputs into the first directory only)
  regress=()
  [ -d "$root/tests/data/fuzz-regress/$t" ] && regress=("$root/tests/data/fuzz-regress/$t")
  echo "== $t: ${secs}s"
  if ! "$bdir/$t" -max_total_time="$secs" -max_len=$max_len -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$bdir/artifacts/$t-" "${extra[@]}" "$corpus" "$seeds" "${regress[@]}"; then
    echo "fuzz.sh: $t FAILED (crashing input in $bdir/artifacts/)" >&2
    rc=1
  fi
done
exit $rc
