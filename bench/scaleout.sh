#!/usr/bin/env bash
# scaleout.sh — the scale-out figures of README "Scale-out": edgespec serve replicas behind HAProxy
# (deploy/haproxy.cfg), measured on this machine, one JSON object on stdout.
#
#  1. throughput: EDGES edge clients (emulated RTT_MS round trip) through HAProxy to 1, 2 and 3
#     replicas, each replica pinned to its own CPU when the machine has one for it (`pinned` says
#     whether it did); tokens per second of wall time, and the scaling against one replica.
#  2. failover: the same clients on 3 replicas, one replica SIGKILLed once every edge has confirmed
#     some tokens; per moved session the time from losing its replica to the first token of the
#     resumed session (the edges' `timings.resume_ms`), p50 / p99 / max, and whether every edge still
#     gave exactly `edgespec run`'s tokens.
#  3. prefix cache: time to first token of a second chat turn (first turn's prompt and answer plus a
#     new question) against the same request on a replica that runs with --no-prefix-cache.
#
#   bench/scaleout.sh
#   env: BUILD (build), TARGET (a GGUF; default the real Qwen2.5-Coder 1.5B when `make models-real`
#        fetched it, else stories260K), DRAFT (the edges' draft; default the real 0.5B or draft-mid),
#        EDGES (6), N_GEN (48), RTT_MS (14), THREADS (server threads per replica, 1),
#        PARTS ("throughput failover prefix": the parts to run)
# Not part of `make test`. Needs haproxy (scripts/install-deps.sh) and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build}
bin=$build/edgespec
models=${ES_TEST_MODELS:-$build/models}
cache=${EDGESPEC_CACHE:-$HOME/.cache/edgespec/models}
real_t=$cache/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf real_d=$cache/qwen2.5-coder-0.5b-instruct-awq-mixed.gguf
if [ -z "${TARGET:-}" ] && [ -f "$real_t" ] && [ -f "$real_d" ]; then TARGET=$real_t DRAFT=${DRAFT:-$real_d}; fi
target=${TARGET:-$models/stories260K.gguf}
draft=${DRAFT:-$models/draft-mid.gguf}
edges=${EDGES:-6} n_gen=${N_GEN:-48} rtt=${RTT_MS:-14} threads=${THREADS:-1}
parts=" ${PARTS:-throughput failover prefix} "
want() { [[ "$parts" == *" $1 "* ]]; }
[ -x "$bin" ] || { echo "scaleout: $bin not built (make)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "scaleout: haproxy missing (scripts/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now() { python3 -c 'import time; print(time.monotonic())'; }
ncpu=$(nproc)
wait_re() { # LOG PID REGEX
  for _ in $(seq 1 6000); do
    v=$(sed -n "s|$3|\\1|p" "$1" | head -n 1)
    [ -n "$v" ] && { echo "$v"; return 0; }
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
declare -A rpid rport rhttp
replica() { # NAME CPU [ARGS...]
  local name=$1 cpu=$2
  shift 2
  local pin=()
  [ "$cpu" -lt "$ncpu" ] && pin=(taskset -c "$cpu")
  "${pin[@]}" "$bin" serve -m "$target" --port 0 --http-port 0 -t "$threads" --kv-memory 2G "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  rpid[$name]=$!
  pids+=("${rpid[$name]}")
  rport[$name]=$(wait_re "$tmp/$name.err" "${rpid[$name]}" '^listening on .*:\([0-9][0-9]*\)$')
  rhttp[$name]=$(wait_re "$tmp/$name.err" "${rpid[$name]}" '^HTTP API listening on http://.*:\([0-9][0-9]*\)$')
  wait_re "$tmp/$name.err" "${rpid[$name]}" '^edgespec serve: \(HTTP API ready\).*' >/dev/null
}
hapid=
front() { # REPLICAS...: HAProxy over them (absent ones point at a closed port and stay DOWN)
  export EDGESPEC_HAPROXY_STATS=$tmp/haproxy.sock EDGESPEC_CHECK_INTER=100ms
  export EDGESPEC_EDGE_BIND=127.0.0.1:$(free_port) EDGESPEC_HTTP_BIND=127.0.0.1:$(free_port)
  local dead
  dead=$(free_port)
  for r in r1 r2 r3; do
    local e=$dead h=$dead
    if [[ " $* " == *" $r "* ]]; then e=${rport[$r]} h=${rhttp[$r]}; fi
    export "EDGESPEC_${r^^}_EDGE=127.0.0.1:$e" "EDGESPEC_${r^^}_HTTP=127.0.0.1:$h" "EDGESPEC_${r^^}_HTTP_PORT=$h"
  done
  haproxy -f "$here/deploy/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
  hapid=$!
  pids+=("$hapid")
  for r in "$@"; do # until HAProxy has seen each replica UP
    for _ in $(seq 1 600); do
      python3 - "$EDGESPEC_HAPROXY_STATS" "$r" <<'PY' && break
import csv, socket, sys
try:
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
    out = b""
    while (b := s.recv(65536)):
        out += b
except OSError:
    sys.exit(1)
rows = list(csv.reader(l for l in out.decode().splitlines() if l.strip()))
hdr = [h.lstrip("# ") for h in rows[0]]
ok = any(dict(zip(hdr, r)).get("svname") == sys.argv[2] and dict(zip(hdr, r)).get("status") == "UP" for r in rows[1:])
sys.exit(0 if ok else 1)
PY
      sleep 0.05
    done
  done
}
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
prompts=("def fibonacci(n):" "Write a function that reverses a string." "class Stack:" "import json
def load(path):" "Once upon a time" "def quicksort(xs):")
edges_run() { # LABEL: EDGES edges through the front end; leaves $tmp/LABEL.N.json
  local label=$1
  epids=()
  for i in $(seq 0 $((edges - 1))); do
    "$bin" edge -d "$draft" --server "$EDGESPEC_EDGE_BIND" -p "${prompts[$((i % ${#prompts[@]}))]}" -n "$n_gen" -t 1 \
      --emulate-rtt-ms "$rtt" --reconnect 40 --json >"$tmp/$label.$i.json" 2>"$tmp/$label.$i.err" &
    epids+=($!)
  done
}

# ---- 1. throughput against replicas ----
thr=()
want throughput && echo "scaleout: throughput with 1, 2, 3 replicas ($edges edges, RTT $rtt ms, $(basename "$target"))" >&2
for n in 1 2 3; do
  want throughput || break
  names=()
  for k in $(seq 1 "$n"); do replica "r$k" $((k - 1)); names+=("r$k"); done
  front "${names[@]}"
  t0=$(now)
  edges_run "thr$n"
  for p in "${epids[@]}"; do wait "$p" || true; done
  t1=$(now)
  tok=$(cat "$tmp"/thr$n.*.json | python3 -c 'import json,sys; print(sum(json.loads(l)["n_generated"] for l in sys.stdin if l.strip()))')
  thr+=("$n $tok $(python3 -c "print($t1 - $t0)")")
  stop_all
done

# ---- 2. failover ----
fo=null
if want failover; then
echo "scaleout: failover (3 replicas, one killed mid-generation)" >&2
for k in 1 2 3; do replica "r$k" $((k - 1)); done
front r1 r2 r3
for i in $(seq 0 $((${#prompts[@]} - 1))); do
  "$bin" run -m "$target" -p "${prompts[$i]}" -n "$n_gen" -t "$threads" --temp 0 --json >"$tmp/ref$i.json" 2>/dev/null
done
edges_run fo
# once every replica holds edge sessions (or 10 s passed), kill the busiest
for _ in $(seq 1 200); do
  busy=0
  for r in r1 r2 r3; do
    v=$(curl -s "http://127.0.0.1:${rhttp[$r]}/metrics" | awk '$1 == "edgespec_active_sessions{kind=\"edge\"}" { print $2 }')
    [ "${v%.*}" -ge 1 ] 2>/dev/null && busy=$((busy + 1))
  done
  [ "$busy" -ge 3 ] && break
  sleep 0.05
done
kill -9 "${rpid[r1]}"
for p in "${epids[@]}"; do wait "$p" || true; done
fo=$(python3 - "$tmp" "$edges" "${#prompts[@]}" <<'PY'
import json, sys
tmp, n, np_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res, exact, moved = [], 0, 0
for i in range(n):
    e = json.load(open(f"{tmp}/fo.{i}.json")); r = json.load(open(f"{tmp}/ref{i % np_}.json"))
    exact += e["tokens"] == r["tokens"]
    moved += e["reconnects"] > 0
    res += e["timings"]["resume_ms"]
res.sort()
q = lambda p: res[min(len(res) - 1, int(p * len(res)))] if res else None
print(json.dumps({"edges": n, "moved": moved, "exact": exact, "resume_ms_p50": q(0.5), "resume_ms_p99": q(0.99),
                  "resume_ms_max": res[-1] if res else None, "resume_ms": res}))
PY
)
stop_all
fi

# ---- 3. prefix cache: a second chat turn ----
warm=0 cold=0 hits=0 p2=0
if want prefix; then
echo "scaleout: prefix cache (second chat turn, warm against --no-prefix-cache)" >&2
turn() { # PORT MESSAGES_JSON OUT: a one-token greedy chat completion; its time to the whole reply (ms, curl's clock)
  local t
  t=$(curl -s --max-time 900 -o "$3" -w '%{time_total}' "http://127.0.0.1:$1/v1/chat/completions" \
    -H 'Content-Type: application/json' -d "{\"messages\":$2,\"max_tokens\":1,\"temperature\":0}")
  python3 -c "print(round($t * 1000, 1))"
}
q1='Write a Python function that checks whether a number is prime, with a docstring and three doctest examples.'
m1="[{\"role\":\"user\",\"content\":\"$q1\"}]"
replica w 0
replica c 1 --no-prefix-cache
curl -s --max-time 900 "http://127.0.0.1:${rhttp[w]}/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "{\"messages\":$m1,\"max_tokens\":96,\"temperature\":0}" >"$tmp/t1.json"
a1=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"]))' "$tmp/t1.json")
m2="[{\"role\":\"user\",\"content\":\"$q1\"},{\"role\":\"assistant\",\"content\":$a1},{\"role\":\"user\",\"content\":\"Now make it faster.\"}]"
warm=$(turn "${rhttp[w]}" "$m2" "$tmp/t2w.json")
cold=$(turn "${rhttp[c]}" "$m2" "$tmp/t2c.json")
hits=$(curl -s "http://127.0.0.1:${rhttp[w]}/metrics" | awk '$1 == "edgespec_prefix_cache_hit_tokens_total" { print $2 }')
p2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$tmp/t2w.json")
stop_all
fi

python3 - "$target" "$draft" "$edges" "$rtt" "$ncpu" "$fo" "$warm" "$cold" "${hits:-0}" "$p2" "${thr[@]}" <<'PY'
import json, os, sys
target, draft, edges, rtt, ncpu, fo, warm, cold, hits, p2 = sys.argv[1:11]
thr = []
for row in sys.argv[11:]:
    n, tok, wall = row.split()
    thr.append({"replicas": int(n), "tokens": int(tok), "wall_s": round(float(wall), 2),
                "tokens_per_s": round(int(tok) / float(wall), 1), "pinned": int(n) <= int(ncpu)})
for t in thr:
    t["scaling"] = round(t["tokens_per_s"] / thr[0]["tokens_per_s"], 2)
print(json.dumps({"target": os.path.basename(target), "draft": os.path.basename(draft), "edges": int(edges),
                  "rtt_ms": float(rtt), "cpus": int(ncpu), "throughput": thr, "failover": json.loads(fo),
                  "prefix_cache": None if int(p2) == 0 else {"second_turn_prompt_tokens": int(p2), "adopted_tokens": int(float(hits)),
                                   "ttft_ms_warm": float(warm), "ttft_ms_cold": float(cold),
                                   "speedup": round(float(cold) / float(warm), 2) if float(warm) > 0 else None}}))
PY
