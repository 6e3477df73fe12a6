#!/usr/bin/env bash
# `make demo`: converts the bundled tiny models to GGUF and generates a story with the target alone,
# speculatively in one process, and split between a verification server and edge clients,
# then speculatively with a distilled draft (chain and tree), showing that the text is identical and
# how many tokens each verification pass confirmed.
set -euo pipefail
build=${1:-build}
bin="$build/edgespec"
models=${EDGESPEC_MODELS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/models}
export EDGESPEC_MODELS=$models
out="$build/models"
"$(dirname "$0")/make-test-models.sh" "$bin" "$out" >&2
prompt="Once upon a time, there was a little girl named Lily"

echo "== target alone (stories260K, greedy) =="
"$bin" run -m "$out/stories260K.gguf" -p "$prompt" -n 120 -t 2
echo
echo "== speculative: draft-mid drafts, stories260K verifies (chain) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --spec chain -p "$prompt" -n 120 -t 2
echo
echo "== speculative: token tree (budget 24, depth 6, width 3) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --spec tree --tree-budget 24 --tree-depth 6 --tree-width 3 -p "$prompt" -n 120 -t 2
echo
echo "== sampling at temperature 1 with exact rejection sampling (seed 7) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --temp 1 --seed 7 -p "$prompt" -n 120 -t 2
echo
echo "== edge–server split: a verification server (stories260K) and three edge devices with their own drafts =="
log=$(mktemp); trap 'kill "$spid" 2>/dev/null || true; rm -f "$log"' EXIT
"$bin" serve -m "$out/stories260K.gguf" --port 0 -t 2 2> "$log" &
spid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$log" >&2; echo "demo: the server did not start" >&2; exit 1; }
summary='
import json, sys
r = json.load(sys.stdin)
s = r["spec"]
p = s["proactive"]
print(r["text"])
print("   %d tokens, acceptance length %.2f, proactive hits %d/%d, %.0f bytes on the wire per token"
      % (r["n_generated"], s["acceptance_length"], p["hits"], p["attempts"], r["wire"]["bytes_per_token"]))'
for d in draft-mid draft-small stories260K_q80; do
  echo "-- edge with $d (tree drafts, proactive drafting, 14 ms emulated round trip) --"
  "$bin" edge -d "$out/$d.gguf" --server "127.0.0.1:$port" -p "$prompt" -n 80 --spec tree \
    --emulate-rtt-ms 14 --json | python3 -c "$summary"
done
kill -INT "$spid"; wait "$spid" || true
