#!/usr/bin/env bash
# `make demo-real`: the story of `make demo` on the real pair (scripts/get-models.sh fetches it once):
# Qwen2.5-Coder 1.5B Instruct (Q4_K_M) alone on a code prompt, then speculatively with Qwen2.5-Coder
# 0.5B Instruct drafting (chain and tree), then split between a verification server (the 1.5B) and an
# edge device drafting with the 0.5B. The greedy text is the same every time.
set -euo pipefail
build=${1:-build}
bin="$build/edgespec"
paths=$("$(dirname "$0")/get-models.sh" --venv "$build/venv")
target=$(sed -n 's/^target=//p' <<<"$paths")
draft=$(sed -n 's/^draft=//p' <<<"$paths")
prompt='def quicksort(xs):
    """Sort the list xs and return a new list."""'
n=96

echo "== target alone (Qwen2.5-Coder 1.5B Q4_K_M, greedy, 2 threads) =="
"$bin" run -m "$target" -p "$prompt" -n $n -t 2
echo
echo "== speculative: the 0.5B drafts, the 1.5B verifies (chain) =="
"$bin" run -m "$target" --draft "$draft" --spec chain -p "$prompt" -n $n -t 2
echo
echo "== speculative: token tree =="
"$bin" run -m "$target" --draft "$draft" --spec tree -p "$prompt" -n $n -t 2
echo
echo "== edge–server split: the 1.5B serves, an edge drafts with the 0.5B (tree, 14 ms emulated round trip) =="
log=$(mktemp); trap 'kill "$spid" 2>/dev/null || true; rm -f "$log"' EXIT
"$bin" serve -m "$target" --port 0 -t 2 --ctx-size 4096 --max-sessions 8 2> "$log" &
spid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$log" >&2; echo "demo-real: the server did not start" >&2; exit 1; }
"$bin" edge -d "$draft" --server "127.0.0.1:$port" -p "$prompt" -n $n --spec tree --emulate-rtt-ms 14 -t 1 --json |
  python3 -c '
import json, sys
r = json.load(sys.stdin)
s = r["spec"]
print(r["text"])
print("   %d tokens, acceptance length %.2f, %.1f tokens/s" % (r["n_generated"], s["acceptance_length"], r["timings"]["tokens_per_s"]))'
kill -INT "$spid"; wait "$spid" || true
