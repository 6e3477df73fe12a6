#!/usr/bin/env bash
# test_device_cli.sh — `edgespec run --device vulkan` (lavapipe in CI, validation layer on through the
# command's EDGESPEC_VK_VALIDATION test hook): greedy output token for token the CPU's with an f32
# KV cache, for plain runs and for `--draft` chains and trees (the target verifies on the device, the
# draft drafts on the CPU), and `serve --device vulkan` verifying for three edges with different
# drafts at once; bad --device values fail clearly. A build configured without Vulkan has
# nothing to check (exit 77).
. "$(dirname "$0")/lib.sh"
es_test_init device-cli

expect 0 "$bin" devices --json
if grep -qF "built without Vulkan" "$tmp/out"; then
  echo "test_device_cli: this build has no Vulkan backend: nothing to check" >&2
  exit 77
fi
export EDGESPEC_VK_VALIDATION=1
target=$models/stories260K.gguf
prompt="Once upon a time"

# tokens PREFIX: the "tokens" array of $tmp/PREFIX.json, one line
tokens() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$tmp/$1.json"; }
# run_json PREFIX args...: edgespec run --json into $tmp/PREFIX.json, stderr into $tmp/PREFIX.err
run_json() {
  local p=$1; shift
  if "$bin" run "$@" --json >"$tmp/$p.json" 2>"$tmp/$p.err"; then ok; else bad "run $*: $(head -c 400 "$tmp/$p.err")"; fi
  if grep -q "vulkan validation" "$tmp/$p.err"; then bad "validation messages in run $*: $(grep -m 3 "vulkan validation" "$tmp/$p.err")"; else ok; fi
}

run_json cpu -m "$target" -p "$prompt" -n 48 --temp 0 --kv-type f32 -t 1
run_json dev -m "$target" -p "$prompt" -n 48 --temp 0 --kv-type f32 --device vulkan
[ "$(tokens cpu)" = "$(tokens dev)" ] && ok || bad "run --device vulkan: $(tokens dev) != cpu $(tokens cpu)"

for spec in chain tree; do
  run_json "spec-$spec" -m "$target" --draft "$models/draft-mid.gguf" --spec "$spec" -p "$prompt" -n 48 --temp 0 \
    --kv-type f32 --device vulkan:0
  [ "$(tokens cpu)" = "$(tokens "spec-$spec")" ] && ok || bad "run --draft --spec $spec on the device: $(tokens "spec-$spec") != $(tokens cpu)"
done

# serve verifying on the device for three edges at once, each with another draft (chain, tree, tree
# with an emulated round trip): every edge's text is the CPU's run
es_reap_on_exit
expect 0 "$bin" run -m "$target" -p "$prompt" -n 48 --temp 0 --kv-type f32 -t 1
cp "$tmp/out" "$tmp/ref.txt"
"$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --kv-type f32 --device vulkan >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
pids+=("$pid")
port=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_LISTEN")
if [ -z "$port" ]; then
  bad "serve --device vulkan did not start: $(head -c 400 "$tmp/serve.err")"
else
  srv=127.0.0.1:$port
  has "$tmp/serve.err" "the target's forward pass runs on vulkan:0 ("
  # /metrics names the device (the name the driver reports, as `devices` lists it)
  hport=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_HTTP")
  dname=$("$bin" devices --json | python3 -c 'import json,sys; print([d for d in json.load(sys.stdin)["devices"] if d["backend"]=="vulkan"][0]["name"])')
  curl -s "http://127.0.0.1:$hport/metrics" >"$tmp/metrics.txt"
  has "$tmp/metrics.txt" "edgespec_device_info{backend=\"vulkan\",index=\"0\",name=\"$dname\"} 1"
  grep -q '^edgespec_device_memory_bytes [1-9]' "$tmp/metrics.txt" && ok || bad "no device memory in /metrics: $(grep device "$tmp/metrics.txt")"
  "$bin" edge -d "$models/draft-mid.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 >"$tmp/e1.out" 2>"$tmp/e1.err" &
  e1=$!
  "$bin" edge -d "$models/draft-small.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree >"$tmp/e2.out" 2>"$tmp/e2.err" &
  e2=$!
  "$bin" edge -d "$models/draft-random.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree --emulate-rtt-ms 5 \
    >"$tmp/e3.out" 2>"$tmp/e3.err" &
  e3=$!
  for k in 1 2 3; do
    eval "wait \$e$k" && ok || bad "edge $k against serve --device vulkan failed: $(head -c 300 "$tmp/e$k.err")"
    cmp -s "$tmp/e$k.out" "$tmp/ref.txt" && ok || bad "edge $k: text differs from run: $(head -c 200 "$tmp/e$k.out")"
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
fi

# two KV tiers (APEX): a device tier of two pages under three edges, so their KV lives mostly in host
# memory and the CPU computes their attention beside the device's work: every edge's text is still
# the CPU's run, and /metrics reports the tiers and the plans the predictor chose
page=$(( 5 * 16 * 2 * 32 * 4 )) # stories260K: 5 layers, kv_dim 32 (4 kv heads of 8), f32 rows, 16 slots a page
"$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --kv-type f32 --device vulkan --device-kv-memory $((2 * page)) \
  >"$tmp/tserve.out" 2>"$tmp/tserve.err" &
pid=$!
pids+=("$pid")
port=$(wait_line "$tmp/tserve.err" "$pid" "$ES_RE_LISTEN")
if [ -z "$port" ]; then
  bad "serve --device-kv-memory did not start: $(head -c 400 "$tmp/tserve.err")"
else
  srv=127.0.0.1:$port
  hport=$(wait_line "$tmp/tserve.err" "$pid" "$ES_RE_HTTP")
  has "$tmp/tserve.err" "two KV tiers: 2 pages"
  "$bin" edge -d "$models/draft-mid.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 >"$tmp/t1.out" 2>"$tmp/t1.err" &
  e1=$!
  "$bin" edge -d "$models/draft-small.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree >"$tmp/t2.out" 2>"$tmp/t2.err" &
  e2=$!
  "$bin" edge -d "$models/draft-mid.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree >"$tmp/t3.out" 2>"$tmp/t3.err" &
  e3=$!
  for k in 1 2 3; do
    eval "wait \$e$k" && ok || bad "edge $k against serve --device-kv-memory failed: $(head -c 300 "$tmp/t$k.err")"
    cmp -s "$tmp/t$k.out" "$tmp/ref.txt" && ok || bad "edge $k with two tiers: text differs from run: $(head -c 200 "$tmp/t$k.out")"
  done
  curl -s "http://127.0.0.1:$hport/metrics" >"$tmp/tmetrics.txt"
  has "$tmp/tmetrics.txt" 'edgespec_device_kv_blocks_total 2'
  grep -q '^edgespec_host_tier_sessions_total [1-9]' "$tmp/tmetrics.txt" && ok || bad "no session in the host tier: $(grep tier "$tmp/tmetrics.txt")"
  has "$tmp/tmetrics.txt" 'edgespec_plan_steps_total{plan="async_overlap"}'
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
fi
# bench serve --device-kv-memory: each point with two tiers and as the device-only baseline (clients
# queue for a session slot), every client's tokens generated in both
expect 0 "$bin" bench serve -m "$target" --modes ar --clients 3 --n-gen 16 -t 1 --kv-type f32 --device vulkan \
  --device-kv-memory $((4 * page)) --json
python3 - "$tmp/out" <<'PY' && ok || bad "bench serve --device-kv-memory --json: $(head -c 600 "$tmp/out")"
import json, sys
d = json.load(open(sys.argv[1]))
rs = d["results"]
assert d["device"] == "vulkan" and d["device_kv_memory"] > 0, d
assert [r["kv"] for r in rs] == ["hybrid", "device_only"], [r["kv"] for r in rs]
for r in rs:
    assert r["tokens"] == 3 * 16 and r["errors"] == 0, r
    assert r["device_sessions"] >= 1
h = rs[0]
assert set(h["plans"]) == {"device_only", "asymmetric", "async_overlap"}, h
assert h["host_tier_sessions"] >= 1 and h["apex_profile"] in ("measured", "preset"), h
assert sum(h["plans"].values()) >= 1 and h["plans"]["asymmetric"] + h["plans"]["async_overlap"] >= 1, h
PY
expect 2 "$bin" bench serve -m "$target" --modes ar --device-kv-memory 1M
has "$tmp/err" "needs --device vulkan"
expect 1 "$bin" serve -m "$target" --port 0 --device-kv-memory 1M
has "$tmp/err" "needs the target on a device"
expect 2 "$bin" serve -m "$target" --port 0 --device vulkan --device-kv-memory lots
has "$tmp/err" "--device-kv-memory must be a size"

# quantised weights run on the device too (their tokens may differ from the CPU's int8 path)
run_json q8 -m "$models/stories260K-q8_0.gguf" -p "$prompt" -n 16 --temp 0 --device vulkan

expect 1 "$bin" run -m "$target" -p "$prompt" -n 4 --device vulkan:99
has "$tmp/err" "no device 99"
expect 2 "$bin" run -m "$target" -p "$prompt" -n 4 --device gpu
has "$tmp/err" "--device must be cpu, vulkan or vulkan:N"

expect 1 "$bin" serve -m "$target" --port 0 --device vulkan:99
has "$tmp/err" "no device 99"
# no driver at all (the loader pointed at an ICD file that does not exist): devices lists the CPU and
# says why, a run on the device fails at start with the reason
VK_ICD_FILENAMES=$tmp/none.json expect 0 "$bin" devices --json
has "$tmp/out" '"vulkan_error":"vulkan: vkCreateInstance failed: VK_ERROR_INCOMPATIBLE_DRIVER'
has "$tmp/out" '"backend":"cpu"'
VK_ICD_FILENAMES=$tmp/none.json expect 1 "$bin" run -m "$target" -p "$prompt" -n 4 --device vulkan
has "$tmp/err" "no Vulkan driver installed?"
expect 2 "$bin" edge -d "$models/draft-mid.gguf" --server 127.0.0.1:1 -p "$prompt" --device vulkan
has "$tmp/err" "an edge drafts on its CPU"

es_test_finish test_device_cli
