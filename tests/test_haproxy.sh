#!/usr/bin/env bash
# test_haproxy.sh — three `serve` replicas behind HAProxy (deploy/haproxy.cfg, Debian's haproxy), on
# 127.0.0.1: 12 edges (three drafts, chain and tree) and 4 HTTP streams run through it; one replica is
# killed with SIGKILL and another drained (SIGTERM, --drain-timeout) while sessions are running on
# them. Every edge must finish with exactly the target's greedy output (`edgespec run`): it reconnects
# through HAProxy and resumes on a live replica from the tokens it has. Every HTTP stream ends (the
# ones on the surviving replica complete; the others end with an error or a cut connection, never a
# hang). HAProxy's own stats show the dead replica DOWN and the traffic on the survivor.
# Replicas 1 and 2 park every session after 8 tokens (EDGESPEC_TEST_PARK_AFTER), so sessions are
# still running on them when they go, whatever the machine's speed; replica 3 does not.
# Needs haproxy (scripts/install-deps.sh installs it): without it the test FAILS.
. "$(dirname "$0")/lib.sh"
es_test_init haproxy
src=${ES_SRC:-.}
target=$models/stories260K.gguf
command -v haproxy >/dev/null || { echo "test_haproxy: FAIL: haproxy is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

declare -A rpid rport rhttp
replica() { # NAME ENV... -- ARGS...: starts a replica, waits until it serves
  local name=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  : >"$tmp/$name.err"
  env "${envs[@]}" "$bin" serve -m "$target" --port 0 --http-port 0 -t 1 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  rpid[$name]=$!
  pids+=("${rpid[$name]}")
  rhttp[$name]=$(wait_line "$tmp/$name.err" "${rpid[$name]}" "$ES_RE_HTTP")
  rport[$name]=$(wait_line "$tmp/$name.err" "${rpid[$name]}" "$ES_RE_LISTEN")
  wait_line "$tmp/$name.err" "${rpid[$name]}" '^edgespec serve: \(HTTP API ready\).*' >/dev/null
  [ -n "${rport[$name]}" ] && [ -n "${rhttp[$name]}" ] || { bad "replica $name did not start: $(tail -c 300 "$tmp/$name.err")"; es_test_finish test_haproxy; exit 1; }
}
replica r1 EDGESPEC_TEST_PARK_AFTER=8 --
replica r2 EDGESPEC_TEST_PARK_AFTER=8 -- --drain-timeout 1
replica r3 --

edge_fe=$(free_port)
http_fe=$(free_port)
export EDGESPEC_HAPROXY_STATS=$tmp/haproxy.sock EDGESPEC_CHECK_INTER=100ms
export EDGESPEC_EDGE_BIND=127.0.0.1:$edge_fe EDGESPEC_HTTP_BIND=127.0.0.1:$http_fe
for r in r1 r2 r3; do
  export "EDGESPEC_${r^^}_EDGE=127.0.0.1:${rport[$r]}" "EDGESPEC_${r^^}_HTTP=127.0.0.1:${rhttp[$r]}" "EDGESPEC_${r^^}_HTTP_PORT=${rhttp[$r]}"
done
haproxy -f "$src/deploy/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
hpid=$!
pids+=("$hpid")
stat() { # the CSV of `show stat` (empty until haproxy answers)
  python3 - "$EDGESPEC_HAPROXY_STATS" <<'PY'
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
    print(out.decode())
except OSError:
    pass
PY
}
server_field() { # BACKEND SERVER FIELD: one field of `show stat`
  stat | python3 -c '
import csv, sys
rows = list(csv.reader(l for l in sys.stdin if l.strip()))
if not rows: sys.exit()
hdr = [h.lstrip("# ") for h in rows[0]]
for r in rows[1:]:
    d = dict(zip(hdr, r))
    if d.get("pxname") == sys.argv[1] and d.get("svname") == sys.argv[2]:
        print(d.get(sys.argv[3], ""))' "$1" "$2" "$3"
}
# every replica UP in HAProxy's eyes before the clients come
for r in r1 r2 r3; do
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    [ "$(server_field edgespec_edge_replicas "$r" status)" = UP ] && break
    kill -0 "$hpid" 2>/dev/null || break
    sleep 0.05
  done
  [ "$(server_field edgespec_edge_replicas "$r" status)" = UP ] && ok || bad "haproxy never saw $r UP: $(tail -c 400 "$tmp/haproxy.log")"
done

# ---- the clients ----
prompts=("Once upon a time" "The little dog" "One day, Lily went to the park" "Tom had a red ball")
drafts=(draft-mid draft-small draft-mid)
for i in $(seq 0 3); do
  "$bin" run -m "$target" -p "${prompts[$i]}" -n 48 -t 1 --temp 0 --json >"$tmp/ref$i.json" 2>/dev/null || bad "run $i failed"
done
epids=()
for i in $(seq 0 11); do
  spec=chain; [ $((i % 2)) = 1 ] && spec=tree
  "$bin" edge -d "$models/${drafts[$((i % 3))]}.gguf" --server "127.0.0.1:$edge_fe" -p "${prompts[$((i % 4))]}" -n 48 -t 1 \
    --spec "$spec" --reconnect 40 --json >"$tmp/edge$i.json" 2>"$tmp/edge$i.err" &
  epids+=($!)
  pids+=($!)
done
cpids=()
for i in $(seq 0 3); do
  curl -sN --max-time 600 "http://127.0.0.1:$http_fe/v1/completions" \
    -d "{\"prompt\":\"${prompts[$i]}\",\"max_tokens\":48,\"temperature\":0,\"stream\":true}" >"$tmp/stream$i.txt" &
  cpids+=($!)
  pids+=($!)
done
# sessions running on both doomed replicas (parked there, so they stay until the replica goes)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'; }
for r in r1 r2; do
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    v=$(metric "${rhttp[$r]}" 'edgespec_active_sessions{kind="edge"}')
    [ -n "$v" ] && [ "${v%.*}" -ge 1 ] && break
    sleep 0.05
  done
  [ "${v%.*}" -ge 1 ] && ok || bad "no edge session reached $r"
done
kill -9 "${rpid[r1]}"
kill -TERM "${rpid[r2]}"

# ---- every edge finishes with the target's output ----
for i in $(seq 0 11); do
  wait "${epids[$i]}"
  rc=$?
  [ "$rc" = 0 ] && ok || bad "edge $i exited $rc: $(tail -c 300 "$tmp/edge$i.err")"
  python3 - "$tmp/edge$i.json" "$tmp/ref$((i % 4)).json" <<'PY' && ok || bad "edge $i output differs from run: $(head -c 300 "$tmp/edge$i.json")"
import json, sys
e = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2]))
assert e["tokens"] == r["tokens"], (e["tokens"], r["tokens"])
# a moved edge reports its outage: one figure per reconnection that confirmed a token after it
res = e["timings"]["resume_ms"]
assert len(res) <= e["reconnects"] and all(x > 0 for x in res), (e["reconnects"], res)
assert e["reconnects"] == 0 or len(res) >= 1, e  # it reconnected because tokens were still to come
PY
done
moved=$(grep -l -i "reconnect\|resum" "$tmp"/edge*.err | wc -l)
[ "$moved" -ge 2 ] && ok || bad "only $moved edges report moving to another replica"
# ---- every stream ends; the ones that completed carry the target's text ----
for i in $(seq 0 3); do
  wait "${cpids[$i]}"
  python3 - "$tmp/stream$i.txt" "$tmp/ref$i.json" <<'PY' && ok || bad "stream $i: $(tail -c 300 "$tmp/stream$i.txt")"
import json, sys
raw = open(sys.argv[1]).read(); ref = json.load(open(sys.argv[2]))
events = [e for e in raw.split("\n\n") if e.strip()]
if events and events[-1] == "data: [DONE]" and not any('"error"' in e for e in events):
    text = "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1] if json.loads(e[6:]).get("choices"))
    assert text == ref["text"], (text, ref["text"])
    print("complete")
else:
    print("ended early")  # cut by the dead or drained replica: ended, not hung
PY
done
wait "${rpid[r2]}"
[ $? -eq 0 ] && ok || bad "the drained replica did not exit 0: $(tail -c 300 "$tmp/r2.err")"
# ---- HAProxy saw it ----
[ "$(server_field edgespec_edge_replicas r1 status)" != UP ] && ok || bad "haproxy still thinks r1 is UP"
r3_sessions=$(server_field edgespec_edge_replicas r3 stot)
[ "${r3_sessions:-0}" -ge 4 ] && ok || bad "r3 took only ${r3_sessions:-0} edge connections"
echo "haproxy: r1 $(server_field edgespec_edge_replicas r1 stot) / r2 $(server_field edgespec_edge_replicas r2 stot) / r3 $r3_sessions edge connections; $moved edges moved"
es_test_finish test_haproxy
