#!/usr/bin/env bash
# test_serve_cli.sh — `edgespec serve`: starts on a free port, announces "listening on HOST:PORT" on
# stderr, stops cleanly on SIGINT / SIGTERM (exit 0, final stats: one JSON object with --json), and
# refuses bad flags with exit 2. And `edgespec bench serve`: a small sweep prints one JSON object with
# every mode and client count, pinning to CPUs works, bad flags exit 2.
. "$(dirname "$0")/lib.sh"
es_test_init cli-serve
model=$models/stories260K.gguf

# start_server LOG ARGS...: starts serve in the background, waits for "listening on"; sets $pid, $port
start_server() {
  local log=$1; shift
  : >"$log" # emptied before the server starts: wait_line must not find an earlier server's port
  "$bin" serve -m "$model" --port 0 -t 1 "$@" >"$log.out" 2>"$log" &
  pid=$!
  port=$(wait_line "$log" "$pid" "$ES_RE_LISTEN")
  if [ -n "$port" ]; then ok; else bad "no 'listening on' line: $(head -c 300 "$log")"; fi
}

# SIGINT, human stats on stderr
start_server "$tmp/s1" --ctx-size 128 --max-sessions 4 --kv-memory 1M --max-frame 64K --idle-timeout 5
if [ -n "$port" ]; then
  # something is listening on the announced port
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok; else bad "cannot connect to port $port"; fi
fi
kill -INT "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 0 ] && ok || bad "serve exited $rc after SIGINT: $(tail -c 300 "$tmp/s1")"
has "$tmp/s1" "steps"
has "$tmp/s1" "connections"
[ ! -s "$tmp/s1.out" ] && ok || bad "stdout should be empty without --json"

# SIGTERM, --json: exactly one JSON object on stdout
start_server "$tmp/s2" --json --api-key k --sched gather --batch-window-ms 1 --max-tree-nodes 16 --prefill-chunk 32 --max-batch-tokens 64
kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 0 ] && ok || bad "serve exited $rc after SIGTERM"
[ "$(wc -l <"$tmp/s2.out")" -eq 1 ] && ok || bad "--json should print one line: $(cat "$tmp/s2.out")"
for k in '"steps":' '"mean_batch_rows":' '"tokens_generated":' '"idle_fraction":' '"compute_cpu_seconds":' \
         '"sessions_opened":' '"frames_in":' '"bytes_out":' '"protocol_errors":' '"connections_total":0' \
         '"sched":"gather"' '"server_busy_fraction":' '"sessions_per_pass":' '"rows_per_pass":' '"groups":0' \
         '"trees":{"fresh":0,"bet_hit":0,"bet_miss":0,"early_hit":0}' \
         '"group_trial":{"model_groups":0,"one_group_tokens_per_s":0,"split_tokens_per_s":0,"epochs":0}'; do
  has "$tmp/s2.out" "$k"
done

expect 0 "$bin" serve --help
has "$tmp/out" "usage:"
has "$tmp/out" "--kv-memory"

# usage errors: 2
expect 2 "$bin" serve
expect 2 "$bin" serve -m "$model" --bogus
expect 2 "$bin" serve -m "$model" --port 70000
expect 2 "$bin" serve -m "$model" --port
expect 2 "$bin" serve -m "$model" --port 12ab
expect 2 "$bin" serve -m "$model" -t 0
expect 2 "$bin" serve -m "$model" --kv-memory 12X
expect 2 "$bin" serve -m "$model" --kv-memory -5
expect 2 "$bin" serve -m "$model" --max-tree-nodes 0
expect 2 "$bin" serve -m "$model" --max-tree-nodes 100000
expect 2 "$bin" serve -m "$model" --max-frame 10
expect 2 "$bin" serve -m "$model" --idle-timeout -1
expect 2 "$bin" serve -m "$model" --batch-window-ms x
expect 2 "$bin" serve -m "$model" --sched fifo
has "$tmp/err" "pipeline or gather"
expect 2 "$bin" serve -m "$model" --api-key ""
expect 2 "$bin" serve -m "$model" --prefill-chunk 600 --max-batch-tokens 512
has "$tmp/err" "prefill-chunk"
# runtime errors: 1
expect 1 "$bin" serve -m "$tmp/does-not-exist.gguf" --port 0
expect 1 "$bin" serve -m "$model" --host no.such.host.invalid --port 0

# bench serve: two modes x two client counts on the tiny models, edges pinned apart from the server
# (both on the first CPU this process may use, so it runs on any machine); the edge mode under both
# scheduling policies, ar once
cpu=$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')
expect 0 "$bin" bench serve -m "$model" --draft "$models/draft-mid.gguf" --modes ar,edge+proactive --clients 1,2 \
  --sched pipeline,gather --n-gen 32 --rtt-ms 1 -t 1 --server-cpus "$cpu" --edge-cpus "$cpu" --json
python3 - "$tmp/out" <<'PY' && ok || bad "bench serve --json: $(head -c 400 "$tmp/out")"
import json, sys
r = json.load(open(sys.argv[1]))
pts = {(x["mode"], x["sched"], x["clients"]): x for x in r["results"]}
assert len(pts) == len(r["results"]) == 6, pts.keys()
assert set(pts) == {("ar", "pipeline", c) for c in (1, 2)} | {("edge+proactive", s, c) for s in ("pipeline", "gather") for c in (1, 2)}, pts.keys()
assert r["server_cpus"] == 1 and r["edge_cpus"] == 1 and r["sched"] == ["pipeline", "gather"]
for (m, s, c), x in pts.items():
    assert x["errors"] == 0 and x["tokens"] == 32 * c, x
    assert x["tokens_per_server_compute_s"] > 0 and x["itl_p50_ms"] > 0 and x["bytes_per_token"] > 0, x
    assert (x["acceptance_length"] == 1) == (m == "ar"), x
    assert 0 < x["server_busy_fraction"] <= 1 and x["sessions_per_pass"] >= 1 and x["rows_per_pass"] >= x["sessions_per_pass"], x
    # one edge is one group, and gathered edges are one group; two pipeline edges are two groups of
    # one until their round time is measured, then what the cycle model says (1 or 2: timing decides)
    if m == "ar": assert x["groups"] == 0, x
    elif c == 1 or s == "gather": assert abs(x["groups"] - 1) < 1e-9, x
    else: assert 1 <= x["groups"] <= 2, x
    # every edge tree the server verified, by how it was drafted: as many as the edges' rounds, and
    # with proactive drafting some drafted ahead under a bet (hit or missed)
    t = x["trees"]
    assert set(t) == {"fresh", "bet_hit", "bet_miss", "early_hit"} and all(v >= 0 for v in t.values()), x
    assert sum(t.values()) == (0 if m == "ar" else x["rounds"]), x
    if m == "edge+proactive": assert t["bet_hit"] + t["bet_miss"] > 0, x
    # the measured check of a split: only pipeline points with two or more edges measure anything
    g = x["group_trial"]
    assert set(g) == {"model_groups", "one_group_tokens_per_s", "split_tokens_per_s", "epochs"} and min(g.values()) >= 0, x
    assert g["epochs"] == 0 and g["model_groups"] == 0, x  # off by default
assert r["group_trial"] is False
PY
# --group-trial: pipeline points check the split by measurement (two edges, rounds enough for
# epochs; whether the model splits them depends on timing, so only what is reported is checked)
expect 0 "$bin" bench serve -m "$model" --draft "$models/draft-mid.gguf" --modes edge --clients 2 --sched pipeline \
  --group-trial --n-gen 48 --rtt-ms 1 -t 1 --server-cpus "$cpu" --edge-cpus "$cpu" --json
python3 - "$tmp/out" <<'PY' && ok || bad "bench serve --group-trial: $(head -c 400 "$tmp/out")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["group_trial"] is True and len(r["results"]) == 1, r
x = r["results"][0]
g = x["group_trial"]
assert x["errors"] == 0 and x["tokens"] == 96 and min(g.values()) >= 0, x
# an epoch measured leaves its arm's rate; none without a split asked for
assert (g["epochs"] > 0) == (g["one_group_tokens_per_s"] + g["split_tokens_per_s"] > 0), g
PY
expect 2 "$bin" bench serve -m "$model" --server-cpus "$cpu"
has "$tmp/err" "go together"
expect 2 "$bin" bench serve -m "$model" --server-cpus 99999 --edge-cpus "$cpu"
expect 2 "$bin" bench serve -m "$model" --server-cpus 1-0 --edge-cpus "$cpu"
expect 2 "$bin" bench serve -m "$model" --server-cpus x --edge-cpus "$cpu"
expect 2 "$bin" bench serve -m "$model" --modes ar,nope
expect 2 "$bin" bench serve -m "$model" --clients 0
expect 2 "$bin" bench serve -m "$model" --sched pipeline,pipeline
expect 2 "$bin" bench serve -m "$model" --sched later

# bench (one model): a prompt past 512 tokens (its batch arrays were 512 long: it crashed there),
# one JSON object with the prefill length and a verify entry per k
expect 0 "$bin" bench -m "$model" --n-prompt 600 --n-gen 4 --ks 1,4 --reps 1 --bw-mib 0 -t 1 --json
python3 - "$tmp/out" <<'PY' && ok || bad "bench --json: $(head -c 400 "$tmp/out")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["prefill_tokens"] == 600 and r["prefill_tokens_per_second"] > 0 and r["decode_tokens_per_second"] > 0, r
assert [v["k"] for v in r["verify"]] == [1, 4] and all(v["ms"] > 0 for v in r["verify"]), r
PY
expect 2 "$bin" bench -m "$model" --n-prompt 9000
# bench spec: more synthetic rates than it keeps is a usage error (it dropped the rest silently)
expect 2 "$bin" bench spec -m "$model" --draft "$models/draft-mid.gguf" --synthetic 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9
has "$tmp/err" "at most 8"
# nor are lists longer than kept: 17 verification sizes, 17 drafts (the 17th was left out without a word)
expect 2 "$bin" bench -m "$model" --ks 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
has "$tmp/err" "at most 16 sizes"
expect 2 "$bin" bench spec -m "$model" --draft "$(printf '%s,' $(seq 1 16 | sed "s#.*#$models/draft-mid.gguf#"))$models/draft-mid.gguf"
has "$tmp/err" "at most 16 GGUF files"
# a prompts file that cannot be read is an error, not an empty file (a folder read as none)
expect 1 "$bin" bench serve -m "$model" --modes ar --clients 1 --prompts "$tmp"
has "$tmp/err" "cannot read $tmp"
# nor is a file with no prompt in it (bench spec printed rows of NaN tokens/s)
printf '\n\n' >"$tmp/empty.txt"
expect 1 "$bin" bench spec -m "$model" --draft "$models/draft-mid.gguf" --prompts "$tmp/empty.txt"
has "$tmp/err" "no line of $tmp/empty.txt gives a token"
expect 1 "$bin" bench serve -m "$model" --modes ar --clients 1 --prompts "$tmp/empty.txt"
has "$tmp/err" "no line of $tmp/empty.txt gives a token"

es_test_finish test_serve_cli
