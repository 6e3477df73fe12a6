#!/usr/bin/env bash
# test_http_queue.sh — the bounded request queue (serve/edge --max-queue N, --queue-timeout S) and the
# latency histograms of /metrics, on the server's HTTP API and on the edge-local API:
#  - a one-session server whose generation is held open (EDGESPEC_TEST_PARK_AFTER: the session stays
#    open, holding its slot, until its client leaves): a second request waits in the queue
#    (edgespec_queued_requests 1) instead of a 503; a third, beyond --max-queue 1, gets 503 with
#    Retry-After; a queued client that hangs up leaves the queue; once the first client leaves, the
#    queued request is served whole (its text equal to the same request on an idle server);
#  - --queue-timeout: a queued request gets 503 queue_timeout with Retry-After, and not before the
#    timeout;
#  - the same on the edge-local API (one worker, its generation parked by the server);
#  - /metrics: edgespec_build_info, and the queue time, time to first token, inter-token latency and
#    end-to-end histograms in Prometheus form (cumulative buckets, +Inf = _count).
# Every wait is for an event (a reply, a metric reaching a value), capped by ES_WAIT_CAP_S.
. "$(dirname "$0")/lib.sh"
es_test_init http-queue
model=$models/stories260K.gguf
draft=$models/draft-small.gguf
command -v curl >/dev/null || { echo "test_http_queue: curl is required" >&2; exit 1; }
es_reap_on_exit

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'; }
# wait_metric PORT NAME OP VALUE: polls /metrics until the sample compares true (at most ES_WAIT_CAP_S)
wait_metric() {
  local v
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    v=$(metric "$1" "$2")
    [ -n "$v" ] && [ "${v%.*}" "$3" "$4" ] && return 0
    sleep 0.05
  done
  echo "($2 = '$v')" >&2
  return 1
}

# the scenario, against one port (the server's HTTP API or the edge-local API) whose single session or
# worker is free: queue.py PORT CAP METRICS_PORT
cat >"$tmp/queue.py" <<'PY'
import json, socket, sys, time, urllib.request
port, cap = int(sys.argv[1]), float(sys.argv[2])
def metric(name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=cap) as r:
        for line in r.read().decode().splitlines():
            if line.split(" ")[0] == name:
                return float(line.split(" ")[1])
    return None
def wait_metric(name, want):
    t0 = time.monotonic()
    while time.monotonic() - t0 < cap:
        if metric(name) == want:
            return
        time.sleep(0.05)
    raise AssertionError("%s never became %s (is %s)" % (name, want, metric(name)))
def send(body):
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    s.settimeout(cap)
    return s
def reply(s):
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body
plain = {"prompt": "Once upon", "max_tokens": 3, "temperature": 0}
# the session (or worker) held: a stream parked by the server after its first tokens
a = send({"prompt": "Once", "max_tokens": 200, "temperature": 0, "stream": True})
first = a.recv(4096)
assert first.startswith(b"HTTP/1.1 200"), first[:200]
wait_metric('edgespec_active_sessions{kind="http"}', 1)
# a request that waits, whose client then hangs up: it leaves the queue
b1 = send(plain)
wait_metric("edgespec_queued_requests", 1)
b1.close()
wait_metric("edgespec_queued_requests", 0)
# one that waits to the end, and one beyond --max-queue 1: 503 at once, with Retry-After
b2 = send(plain)
wait_metric("edgespec_queued_requests", 1)
c = send(plain)
head, body = reply(c)
assert head.startswith("HTTP/1.1 503"), head
assert "\r\nretry-after: " in head.lower(), head
err = json.loads(body)["error"]
assert err["code"] == "server_busy" and "--max-queue 1" in err["message"], err
assert metric('edgespec_queue_rejected_total{reason="full"}') == 1
# the held stream's client leaves: its session ends and the queued request takes it
a.close()
head, body = reply(b2)
assert head.startswith("HTTP/1.1 200"), (head, body[:300])
got = json.loads(body)
assert got["usage"]["completion_tokens"] == 3 and got["choices"][0]["finish_reason"] == "length", got
wait_metric("edgespec_queued_requests", 0)
# ... with the same text as the same request when nothing else runs
head, body = reply(send(plain))
assert head.startswith("HTTP/1.1 200"), head
assert json.loads(body)["choices"][0]["text"] == got["choices"][0]["text"], (body, got)
print("queue ok")
PY

# the histograms: hist.py PORT N I (every latency family well formed, each with at least N observations,
# the inter-token one with I: the edge confirms a short reply in one round, which has no interval)
cat >"$tmp/hist.py" <<'PY'
import sys, urllib.request
port, want_min, itl_min = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=60).read().decode()
lines = page.splitlines()
assert any(l.startswith('edgespec_build_info{version="') and l.endswith(" 1") for l in lines), "no build info"
for name in ["edgespec_queue_time_seconds", "edgespec_time_to_first_token_seconds", "edgespec_inter_token_latency_seconds",
             "edgespec_request_latency_seconds"]:
    assert "# TYPE %s histogram" % name in lines, name
    buckets = [(l.split('le="')[1].split('"')[0], float(l.split(" ")[1])) for l in lines if l.startswith(name + "_bucket{")]
    assert buckets[-1][0] == "+Inf", buckets
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), (name, buckets)  # cumulative
    count = float([l for l in lines if l.startswith(name + "_count ")][0].split(" ")[1])
    total = float([l for l in lines if l.startswith(name + "_sum ")][0].split(" ")[1])
    assert counts[-1] == count and total >= 0, (name, count, buckets)
    assert count >= (itl_min if "inter_token" in name else want_min), (name, count)
    if name == "edgespec_queue_time_seconds":
        # the request that waited for the held session waited a while (how long depends on the machine)
        assert total > 0, (name, buckets, total)
print("histograms ok")
PY

# ---- 1. the server's HTTP API: one session, a queue of one ----
EDGESPEC_TEST_PARK_AFTER=4 es_serve_start "$tmp/s1" --max-sessions 1 --max-queue 1 --queue-timeout 0
[ -n "$hport" ] || { bad "serve did not start: $(head -c 400 "$tmp/s1")"; es_test_finish test_http_queue; exit; }
python3 "$tmp/queue.py" "$hport" "$ES_WAIT_CAP_S" >"$tmp/q1.out" 2>&1 && ok || bad "server queue: $(tail -c 1500 "$tmp/q1.out")"
python3 "$tmp/hist.py" "$hport" 2 1 >"$tmp/h1.out" 2>&1 && ok || bad "server histograms: $(tail -c 800 "$tmp/h1.out")"
sport=$hport
seport=$eport

# ---- 2. the edge-local API: one worker, a queue of one (its generation parked by the same server) ----
"$bin" edge -d "$draft" --server "127.0.0.1:$seport" --listen 127.0.0.1:0 --parallel 1 --max-queue 1 --queue-timeout 0 -t 1 \
  >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
if [ -n "$lport" ]; then
  python3 "$tmp/queue.py" "$lport" "$ES_WAIT_CAP_S" >"$tmp/q2.out" 2>&1 && ok || bad "edge queue: $(tail -c 1500 "$tmp/q2.out") $(tail -c 600 "$tmp/edge.err")"
  python3 "$tmp/hist.py" "$lport" 2 0 >"$tmp/h2.out" 2>&1 && ok || bad "edge histograms: $(tail -c 800 "$tmp/h2.out")"
else
  bad "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"
fi
kill -TERM "$epid"; wait "$epid" 2>/dev/null
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s1")"

# ---- 3. --queue-timeout: a queued request gets 503 queue_timeout, not before the timeout ----
cat >"$tmp/timeout.py" <<'PY'
import json, socket, sys, time
port, cap = int(sys.argv[1]), float(sys.argv[2])
def send(body):
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    s.settimeout(cap)
    return s
a = send({"prompt": "Once", "max_tokens": 200, "temperature": 0, "stream": True})
assert a.recv(4096).startswith(b"HTTP/1.1 200")
t0 = time.monotonic()
b = send({"prompt": "Once", "max_tokens": 3})
data = b""
while True:
    c = b.recv(65536)
    if not c:
        break
    data += c
dt = time.monotonic() - t0
head, _, body = data.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 503") and b"\r\nretry-after: " in head.lower(), head
assert json.loads(body)["error"]["code"] == "queue_timeout", body
assert dt >= 0.45, dt  # the timeout is 0.5 s: never answered before it
print("timeout ok")
PY
EDGESPEC_TEST_PARK_AFTER=4 es_serve_start "$tmp/s2" --max-sessions 1 --queue-timeout 0.5
python3 "$tmp/timeout.py" "$hport" "$ES_WAIT_CAP_S" >"$tmp/t1.out" 2>&1 && ok || bad "server queue timeout: $(tail -c 800 "$tmp/t1.out")"
[ "$(metric "$hport" 'edgespec_queue_rejected_total{reason="timeout"}')" = 1 ] && ok || bad "queue timeouts not counted"
"$bin" edge -d "$draft" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 --parallel 1 --queue-timeout 0.5 -t 1 \
  >"$tmp/edge2.out" 2>"$tmp/edge2.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge2.err" "$epid" "$ES_RE_HTTP")
# the server's session is free again once the first script's stream was closed
wait_metric "$hport" 'edgespec_active_sessions{kind="http"}' -eq 0 && ok || bad "the server session outlived its client"
if [ -n "$lport" ]; then
  python3 "$tmp/timeout.py" "$lport" "$ES_WAIT_CAP_S" >"$tmp/t2.out" 2>&1 && ok || bad "edge queue timeout: $(tail -c 800 "$tmp/t2.out")"
else
  bad "edge --listen did not start: $(head -c 400 "$tmp/edge2.err")"
fi
kill -TERM "$epid"; wait "$epid" 2>/dev/null
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s2")"

# ---- 4. flags: out-of-range values are usage errors ----
expect 2 "$bin" serve -m "$model" --max-queue -1
expect 2 "$bin" serve -m "$model" --queue-timeout x
expect 2 "$bin" edge -d "$draft" --listen 127.0.0.1:0 --max-queue -1

es_test_finish test_http_queue
