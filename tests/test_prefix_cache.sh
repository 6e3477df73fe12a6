#!/usr/bin/env bash
# test_prefix_cache.sh — the server's prefix cache seen through the HTTP API: a second turn whose
# prompt is the first turn's prompt + its answer + more text adopts the first turn's KV pages
# (`edgespec_prefix_cache_hit_tokens_total` grows by at least the whole pages of the first prompt)
# and prefills only the rest, and its answer is the same as a server without the cache gives
# (`--no-prefix-cache`, the counter stays 0). `serve --json` reports the same counter. The same with
# two KV tiers, the second turn in the host tier adopting pages the device holds.
. "$(dirname "$0")/lib.sh"
es_test_init prefix-cache
model=$models/stories260K.gguf
es_reap_on_exit
p1='Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends and her dog.'
# complete PORT PROMPT MAX OUT: a greedy completion; prints nothing, the reply is in OUT
complete() {
  python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "max_tokens": int(sys.argv[2]), "temperature": 0}))' "$2" "$3" >"$tmp/req.json"
  curl -s --max-time 600 "http://127.0.0.1:$1/v1/completions" -H 'Content-Type: application/json' -d @"$tmp/req.json" >"$4"
}
field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"r": r}))' "$1" "$2"; }
hits() { curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "edgespec_prefix_cache_hit_tokens_total" { print $2 }'; }

run_turns() { # LABEL [SERVE ARGS...]: two turns on one server; leaves $tmp/LABEL.{t1,t2,h0,h1} and the --json stats
  local label=$1
  shift
  es_serve_start "$tmp/$label" --json "$@"
  complete "$hport" "$p1" 40 "$tmp/$label.t1"
  hits "$hport" >"$tmp/$label.h0"
  local text
  text=$(field "$tmp/$label.t1" 'r["choices"][0]["text"]')
  complete "$hport" "$p1$text Then they went home." 16 "$tmp/$label.t2"
  hits "$hport" >"$tmp/$label.h1"
  kill -INT "$pid"
  wait "$pid"
}

run_turns on
run_turns off --no-prefix-cache
n1=$(field "$tmp/on.t1" 'r["usage"]["prompt_tokens"]')
n2=$(field "$tmp/on.t2" 'r["usage"]["prompt_tokens"]')
h0=$(cat "$tmp/on.h0") h1=$(cat "$tmp/on.h1")
# the first turn's prompt pages at least (its answer's pages too, when the text tokenizes back the same)
[ -n "$h1" ] && [ $((h1 - h0)) -ge $((n1 / 16 * 16)) ] && [ $((h1 - h0)) -lt "$n2" ] && [ "$n1" -ge 16 ] && ok ||
  bad "second turn of $n2 prompt tokens (first $n1): $h0 -> $h1 tokens adopted"
[ "$(cat "$tmp/off.h1")" = 0 ] && ok || bad "--no-prefix-cache adopted $(cat "$tmp/off.h1") tokens"
for t in t1 t2; do
  [ "$(field "$tmp/on.$t" 'r["choices"][0]["text"]')" = "$(field "$tmp/off.$t" 'r["choices"][0]["text"]')" ] && ok ||
    bad "$t differs with the cache: $(head -c 300 "$tmp/on.$t") / $(head -c 300 "$tmp/off.$t")"
done
[ "$(field "$tmp/on.out" 'r["prefix_cache_hit_tokens"]')" = "$h1" ] && ok || bad "serve --json: $(head -c 400 "$tmp/on.out")"
grep -q '"prefix_cache_blocks":0' "$tmp/on.out" && bad "no page cached: $(cat "$tmp/on.out")" || ok
echo "prefix cache: second turn of $n2 prompt tokens (first $n1) adopted $((h1 - h0))"

# ---- the same across two KV tiers (APEX on the Vulkan device, lavapipe here): a 6-page device tier
# (10 KiB pages) takes the first turn's session, not the second's, which goes to the host tier and
# adopts pages only the device holds (brought down for it); the answers equal a tiered server
# without the cache ----
tiers=(--device vulkan --kv-type f16 --device-kv-memory 60K)
run_turns tiers "${tiers[@]}"
run_turns tiers_off "${tiers[@]}" --no-prefix-cache
h0=$(cat "$tmp/tiers.h0") h1=$(cat "$tmp/tiers.h1")
[ -n "$h1" ] && [ $((h1 - h0)) -ge $((n1 / 16 * 16)) ] && ok || bad "two tiers: second turn adopted $h0 -> $h1 tokens"
for t in t1 t2; do
  [ "$(field "$tmp/tiers.$t" 'r["choices"][0]["text"]')" = "$(field "$tmp/tiers_off.$t" 'r["choices"][0]["text"]')" ] && ok ||
    bad "two tiers: $t differs with the cache: $(head -c 300 "$tmp/tiers.$t") / $(head -c 300 "$tmp/tiers_off.$t")"
done
python3 - "$tmp/tiers.out" <<'PY' && ok || bad "two tiers, serve --json: $(head -c 600 "$tmp/tiers.out")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["kv_tiers"] and r["host_tier_sessions"] >= 1, r
assert r["prefix_cache_hit_tokens"] > 0 and r["device_kv_blocks_used"] == 0, r
assert 0 <= r["tier_copy_waits"] <= r["tier_copies_async"], r
PY
echo "prefix cache across two tiers: second turn adopted $((h1 - h0))"
es_test_finish test_prefix_cache
