#!/usr/bin/env bash
# test_real_cli.sh — greedy exactness on the real Qwen2.5-Coder pair (make models-real; CTest label
# `real`): for code prompts, `run --draft` (chain and tree) gives the very tokens `run` gives with the
# 1.5B target alone, and so do `edge` (0.5B draft, chain and tree) against `serve` (1.5B target); the
# tokenizer reference of test_real is what the pinned Hugging Face `tokenizers` writes today. Exits 77
# (CTest: skipped) when the models are not in $EDGESPEC_CACHE (default ~/.cache/edgespec/models).
. "$(dirname "$0")/lib.sh"
es_test_init real-cli
cache=${EDGESPEC_CACHE:-$HOME/.cache/edgespec/models}
target=$cache/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
draft=$cache/qwen2.5-coder-0.5b-instruct-awq-mixed.gguf
if [ ! -r "$target" ] || [ ! -r "$draft" ]; then
  echo "test_real_cli: SKIPPED: the real models are not in $cache (make models-real fetches them)"
  exit 77
fi
n=32
prompts=(
  "def fibonacci(n):"
  "// Return the index of x in the sorted array a[0..n), or -1.
int binary_search(const int *a, int n, int x) {"
  "import json

def load_config(path):
    \"\"\"Read a JSON config file and return it as a dict.\"\"\""
)

tokens() { # JSON file -> its token ids on one line
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$1"
}

for i in "${!prompts[@]}"; do
  p=${prompts[$i]}
  expect 0 "$bin" run -m "$target" -p "$p" -n $n -t 2 --json
  tokens "$tmp/out" >"$tmp/ref$i"
  [ "$(tr -cd ',' <"$tmp/ref$i" | wc -c)" -eq $((n - 1)) ] && ok || bad "prompt $i: run did not give $n tokens: $(cat "$tmp/ref$i")"
  for spec in chain tree; do
    expect 0 "$bin" run -m "$target" --draft "$draft" --spec $spec -p "$p" -n $n -t 2 --json
    tokens "$tmp/out" >"$tmp/got"
    cmp -s "$tmp/got" "$tmp/ref$i" && ok || bad "prompt $i, run --draft --spec $spec: $(cat "$tmp/got") vs $(cat "$tmp/ref$i")"
    # the draft really drafted and the target accepted some of it (a broken draft would still be exact)
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["spec"]; assert s["accepted"] > 0, s' "$tmp/out" && ok ||
      bad "prompt $i, $spec: nothing accepted"
  done
done

# serve + edge: the streamed text equals run's
"$bin" serve -m "$target" --port 0 -t 2 --ctx-size 2048 --max-sessions 4 >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
port=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_LISTEN")
if [ -z "$port" ]; then
  bad "the server did not start: $(head -c 400 "$tmp/serve.err")"
else
  p=${prompts[0]}
  expect 0 "$bin" run -m "$target" -p "$p" -n $n -t 2
  cp "$tmp/out" "$tmp/ref.txt"
  for spec in chain tree; do
    expect 0 "$bin" edge -d "$draft" --server "127.0.0.1:$port" --spec $spec -p "$p" -n $n -t 1
    cmp -s "$tmp/out" "$tmp/ref.txt" && ok || bad "edge --spec $spec: $(head -c 300 "$tmp/out") vs $(head -c 300 "$tmp/ref.txt")"
  done
fi
[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null

# llama.cpp's greedy continuations (scripts/gen-llamacpp-ref.py, llama-cpp-python on the same file):
# each of our 32-token continuations must equal llama.cpp's, or part from it only at a near tie, a step
# where llama.cpp's own top two logits are less than 0.7 apart (its "margins"; the median step's is
# several logits). 0.7 is measured, not chosen: fed llama.cpp's own tokens, edgespec's top-2 gap differs
# from llama.cpp's by 0.06 at the median step but by up to 0.67 at single steps (0.41 before the Q8_K
# activations, whose other steps are closer), and llama.cpp's flash-attention path differs from its own
# default by up to 0.35 on three prompts; reference 11 parts at its first token, margin 0.33. There kernels that round differently pick either token: both quantise the
# activations of a K-quant product as Q8_K now, but sum in other orders, round attention elsewhere (f16
# queries and probabilities in llama.cpp), and the model amplifies one ulp into a flipped int8 step;
# llama.cpp itself gives another argmax batched than token by token at reference 1's parting step, and
# with flash attention on (llama-cpp-python 0.3.36, 2 threads) it reproduces only 13 of its own 20
# flash-attention-off continuations, edgespec 15.
# Both models: the 1.5B target and the 0.5B draft (Q5_0 / Q8_0 / K-quants) each against its own reference.
check_llamacpp() { # MODEL REF.jsonl NAME
  local model=$1 ref=$2 name=$3 line same=0 ties=0 total=0
  while IFS= read -r line; do
    python3 -c 'import json,sys; sys.stdout.write(json.loads(sys.argv[1])["prompt"])' "$line" >"$tmp/prompt.txt"
    expect 0 "$bin" run -m "$model" -f "$tmp/prompt.txt" -n 32 -t 2 --json
    total=$((total + 1))
    # llama.cpp's ids end with the end-of-generation token when it stopped early; run does not print it
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
want, margins = r["ids"], r["margins"]
while want and want[-1] in (151643, 151645):
    want.pop()
got = json.load(open(sys.argv[2]))["tokens"]
while got and got[-1] in (151643, 151645):  # (run lists the end-of-generation token it stopped at)
    got.pop()
if got == want:
    sys.exit(0)
k = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), min(len(got), len(want)))
print("%s: llama.cpp reference %s parts at token %d, where llama.cpp'"'"'s top-2 margin is %s" % (sys.argv[4], sys.argv[3], k, margins[k] if k < len(margins) else "-"), file=sys.stderr)
sys.exit(2 if k < len(margins) and margins[k] < 0.7 else 1)' "$line" "$tmp/out" "$total" "$name"
    case $? in
      0) same=$((same + 1)); ok ;;
      2) ties=$((ties + 1)); ok ;;
      *) bad "$name, llama.cpp reference $total: the continuation parts from llama.cpp's where it is no near tie" ;;
    esac
  done <"$ref"
  echo "$name, llama.cpp reference: $same of $total continuations identical, $ties part at a near tie"
  [ "$total" -ge 10 ] && ok || bad "only $total llama.cpp references in $ref"
}
check_llamacpp "$target" "${ES_SRC:-.}/tests/data/qwen2.5-coder-1.5b-llamacpp-ref.jsonl" target
check_llamacpp "$draft" "${ES_SRC:-.}/tests/data/qwen2.5-coder-0.5b-llamacpp-ref.jsonl" draft

# the committed tokenizer reference is what tokenizers writes from these files today
py=$(es_venv_python) && "$py" "${ES_SRC:-.}/scripts/gen-qwen2-tokenizer-ref.py" "$target" "$tmp/tokref.jsonl" >/dev/null 2>"$tmp/gen.err" &&
  cmp -s "$tmp/tokref.jsonl" "${ES_SRC:-.}/tests/data/qwen2.5-coder-tokenizer-ref.jsonl" && ok ||
  bad "tests/data/qwen2.5-coder-tokenizer-ref.jsonl is not what scripts/gen-qwen2-tokenizer-ref.py writes: $(tail -c 300 "$tmp/gen.err")"

# serve with its defaults (a 32,768-token context for 64 sessions would want ~56 GB of KV): the pool is
# capped at half of the machine's memory, and the server starts and answers
: >"$tmp/dflt.err"
"$bin" serve -m "$target" --port 0 --http-port 0 -t 2 >"$tmp/dflt.out" 2>"$tmp/dflt.err" &
dpid=$!
dport=$(wait_line "$tmp/dflt.err" "$dpid" "$ES_RE_HTTP")
wait_line "$tmp/dflt.err" "$dpid" '^edgespec serve: \(HTTP API ready\).*' >/dev/null
grep -q "KV pool .* GiB, half of this machine's memory" "$tmp/dflt.err" && ok || bad "no KV cap line: $(head -c 400 "$tmp/dflt.err")"
[ -n "$dport" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$dport/health")" = 200 ] && ok ||
  bad "serve with default flags did not come up: $(head -c 400 "$tmp/dflt.err")"
kill -TERM "$dpid"
wait "$dpid"
[ $? -eq 0 ] && ok || bad "serve with default flags did not stop cleanly"
es_test_finish test_real_cli
