#!/usr/bin/env bash
# test_edge_cli.sh — `edgespec edge` end to end against `edgespec serve`: the streamed text equals
# `edgespec run` on the target for the same greedy prompt (chain and tree, proactive on and off,
# --no-draft, --server-spec, emulated RTT); --json prints exactly one object that parses and carries
# the documented fields; usage errors exit 2, a foreign vocabulary or a missing server exit 1.
. "$(dirname "$0")/lib.sh"
es_test_init cli-edge
target=$models/stories260K.gguf
draft=$models/draft-mid.gguf

"$bin" serve -m "$target" --port 0 -t 1 --draft "$models/draft-small.gguf" >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
port=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_LISTEN")
if [ -z "$port" ]; then
  bad "the server did not start: $(head -c 400 "$tmp/serve.err")"
  echo "test_edge_cli: $pass passed, $fail failed"
  exit 1
fi
srv=127.0.0.1:$port
prompt="Once upon a time"

# the reference: the target alone
expect 0 "$bin" run -m "$target" -p "$prompt" -n 48 -t 1
cp "$tmp/out" "$tmp/ref.txt"
[ -s "$tmp/ref.txt" ] && ok || bad "run printed nothing"

same_as_ref() { # label
  if cmp -s "$tmp/out" "$tmp/ref.txt"; then ok; else bad "$1: text differs from run: $(head -c 200 "$tmp/out") vs $(head -c 200 "$tmp/ref.txt")"; fi
}
expect 0 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 48 -t 1
same_as_ref "edge chain"
has "$tmp/err" "edge mode"
expect 0 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree --proactive off
same_as_ref "edge tree, proactive off"
expect 0 "$bin" edge -d "$models/draft-small.gguf" --server "$srv" -p "$prompt" -n 48 -t 1 --spec tree --tree-budget 16 --emulate-rtt-ms 10
same_as_ref "edge tree, emulated rtt"
expect 0 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 48 -t 1 --no-draft
same_as_ref "edge --no-draft"
expect 0 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 48 -t 1 --server-spec
same_as_ref "edge --server-spec"

# --json: exactly one object, same text as run --json
expect 0 "$bin" run -m "$target" -p "$prompt" -n 48 -t 1 --json
cp "$tmp/out" "$tmp/ref.json"
expect 0 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 48 -t 1 --json
cp "$tmp/out" "$tmp/edge.json"
[ "$(wc -l <"$tmp/edge.json")" -eq 1 ] && ok || bad "--json should print one line: $(head -c 300 "$tmp/edge.json")"
if python3 - "$tmp/edge.json" "$tmp/ref.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
r = json.load(open(sys.argv[2]))
assert e["text"] == r["text"], (e["text"], r["text"])
assert e["tokens"] == r["tokens"], (e["tokens"], r["tokens"])
assert e["n_generated"] == 48 and e["n_prompt"] == r["n_prompt"]
assert e["stop"] == "length"
for k in ("ttft_ms", "total_s", "tokens_per_s"):
    assert e["timings"][k] >= 0, k
s = e["spec"]
for k in ("rounds", "drafted", "accepted", "acceptance_length", "acceptance_rate", "accepted_at_depth", "draft_s", "wait_s"):
    assert k in s, k
assert s["rounds"] > 0 and s["acceptance_length"] > 1
p = s["proactive"]
assert p["enabled"] is True and p["attempts"] > 0 and 0 <= p["hit_ratio"] <= 1
t = s["trees"]  # one tree per round, by how it was drafted; a bet that hit sends its tree as the next
assert sum(t.values()) == s["rounds"] and t["bet_hit"] == p["hits"], (t, s["rounds"], p)
w = e["wire"]
assert w["bytes_sent"] > 0 and w["bytes_received"] > 0 and w["frames"] > 0 and w["bytes_per_token"] > 0
assert e["reconnects"] == 0 and e["fallback_tokens"] == 0
EOF
then ok; else bad "edge --json: $(head -c 400 "$tmp/edge.json")"; fi

# refusals
expect 2 "$bin" edge --server "$srv" -p "$prompt"                      # no draft
expect 2 "$bin" edge -d "$draft" --server nowhere -p "$prompt"          # no port
expect 2 "$bin" edge -d "$draft" --server "$srv" --proactive maybe -p x
expect 2 "$bin" edge -d "$draft" --server "$srv" --temp 1 --accept greedy -p x
expect 1 "$bin" edge -d "$models/tinystories656k.gguf" --server "$srv" -p "$prompt" -n 4
has "$tmp/err" "vocab"

kill -INT "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly"

# nobody listening
expect 1 "$bin" edge -d "$draft" --server "$srv" -p "$prompt" -n 4 --reconnect 0

es_test_finish test_edge_cli
