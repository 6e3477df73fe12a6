#!/usr/bin/env bash
# bench-http.sh — HTTP serving throughput of `edgespec serve --http-port`: 1, 8 and 32 concurrent
# streaming clients (scripts/bench-http.mjs), with the target alone (autoregressive) and with a
# server-side draft model (server-side speculative decoding). Prints a table and, last, one JSON
# object with every run.
#
#   scripts/bench-http.sh [BUILD_DIR]    env: SECONDS_PER_RUN (10), MAX_TOKENS (128), THREADS (1),
#                                          CLIENTS ("1 8 32"), TARGET, DRAFT
set -euo pipefail
build=${1:-build}
bin=$build/edgespec
models=${ES_TEST_MODELS:-$build/models}
target=${TARGET:-$models/stories260K.gguf}
draft=${DRAFT:-$models/draft-mid.gguf}
secs=${SECONDS_PER_RUN:-10}
max_tokens=${MAX_TOKENS:-128}
threads=${THREADS:-1}
clients_list=${CLIENTS:-1 8 32}
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "bench-http: node is required" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench-http: $bin not built" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
spid=

runs=()
for mode in ar spec; do
  extra=()
  [ "$mode" = spec ] && extra=(--draft "$draft")
  "$bin" serve -m "$target" --port 0 --http-port 0 -t "$threads" "${extra[@]}" >"$tmp/serve.out" 2>"$tmp/serve.err" &
  spid=$!
  port=
  for _ in $(seq 1 200); do
    port=$(sed -n 's|^HTTP API listening on http://.*:\([0-9][0-9]*\)$|\1|p' "$tmp/serve.err" | head -n 1)
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "bench-http: server did not start: $(cat "$tmp/serve.err")" >&2; exit 1; }
  for c in $clients_list; do
    j=$(node "$here/bench-http.mjs" --url "http://127.0.0.1:$port" --clients "$c" --seconds "$secs" --max-tokens "$max_tokens")
    acc=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "edgespec_acceptance_length" { print $2 }')
    runs+=("$(printf '%s' "$j" | sed "s/^{/{\"mode\":\"$mode\",\"acceptance_length\":${acc:-0},/")")
  done
  kill -INT "$spid"
  wait "$spid" || true
  spid=
done

printf '%-6s %8s %10s %11s %12s %12s %10s\n' mode clients "req/s" "tokens/s" "ttft p50 ms" "itl ms" "acc.len"
for r in "${runs[@]}"; do
  printf '%s\n' "$r" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);
    console.log([j.mode.padEnd(6), String(j.clients).padStart(8), j.requests_per_s.toFixed(2).padStart(10), j.tokens_per_s.toFixed(0).padStart(11),
      j.ttft_ms_p50.toFixed(1).padStart(12), j.itl_ms_mean.toFixed(2).padStart(12), (j.mode=="spec"?j.acceptance_length.toFixed(2):"-").padStart(10)].join(" "))})'
done
printf '{"target":"%s","draft":"%s","threads":%s,"max_tokens":%s,"seconds_per_run":%s,"runs":[%s]}\n' \
  "$target" "$draft" "$threads" "$max_tokens" "$secs" "$(IFS=,; echo "${runs[*]}")"
