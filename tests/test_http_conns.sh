#!/usr/bin/env bash
# test_http_conns.sh — the HTTP ports' connection limits (serve --http-port and edge --listen share
# them): --http-max-connections (one past the cap gets 503 in JSON and is closed) and
# --http-request-timeout (a request whose bytes trickle in, one every 100 ms, is cut with 408 however
# long it keeps trickling; evhttp's own timeout restarts at every byte). A stream that runs past the
# deadline is not cut: the deadline is for requests to arrive, not for replies.
# No timing assumption: each check waits for an event (a reply, an EOF) under ES_WAIT_CAP_S, and the
# stream is kept running by the scheduler's park hook (EDGESPEC_TEST_PARK_AFTER).
. "$(dirname "$0")/lib.sh"
es_test_init http-conns
model=$models/stories260K.gguf
es_reap_on_exit

cap_check() { # PORT LIMIT: LIMIT idle connections hold every slot; one more gets 503 and EOF
  python3 - "$1" "$2" "$ES_WAIT_CAP_S" <<'PY'
import json, socket, sys, time
port, limit, cap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def reply_of(s):
    """Everything the server sends until it closes the connection."""
    s.settimeout(cap)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data
idle = []
for _ in range(limit):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /health HTTP/1.1\r\n")
    idle.append(s)
# a connection accepted after them is the (limit+1)-th, whatever order evhttp handles the accepts in
data = reply_of(socket.create_connection(("127.0.0.1", port)))
head, _, body = data.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 503"), data[:300]
assert b"Retry-After: 1" in head, head
e = json.loads(body)["error"]
assert e["code"] == "too_many_connections" and e["message"], e
for s in idle:
    s.close()
# the slots come back once those connections are gone (swept at the next accept or tick): a request
# gets through; until then each attempt is refused with 503
t0 = time.monotonic()
while True:
    h = socket.create_connection(("127.0.0.1", port))
    h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = reply_of(h)
    if reply.startswith(b"HTTP/1.1 200"):
        break
    assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
    assert time.monotonic() - t0 < cap, "the slots never came back"
    time.sleep(0.1)
PY
}

# ---- 1. the cap, on both HTTP ports ----
es_serve_start "$tmp/s1" --http-max-connections 3 --http-request-timeout 0
cap_check "$hport" 3 && ok || bad "serve --http-max-connections 3"
"$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 -t 1 --http-max-connections 2 \
  --http-request-timeout 0 >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
[ -n "$lport" ] && cap_check "$lport" 2 && ok || bad "edge --listen --http-max-connections 2: $(tail -c 300 "$tmp/edge.err")"
kill -TERM "$epid"; wait "$epid"
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s1")"

# ---- 2. trickling requests are cut; a long stream is not ----
EDGESPEC_TEST_PARK_AFTER=4 es_serve_start "$tmp/s2" --http-request-timeout 1
python3 - "$hport" "$ES_WAIT_CAP_S" <<'PY' && ok || bad "request timeout: $(tail -c 400 "$tmp/s2")"
import json, socket, sys, time
port, cap = int(sys.argv[1]), float(sys.argv[2])
def trickle(payload):
    """Sends one byte every 100 ms until the server answers or closes; returns (reply, seconds)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    reply, i = b"", 0
    while time.monotonic() - t0 < cap:
        try:
            chunk = s.recv(4096)
            if not chunk:
                return reply, time.monotonic() - t0
            reply += chunk
            continue
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return reply, time.monotonic() - t0
        try:
            s.send(payload[i % len(payload):i % len(payload) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return reply, time.monotonic() - t0
        i += 1
        time.sleep(0.1)
    raise AssertionError(f"still open after {cap} s of trickling")
# a stream that outlives the deadline: parked after 4 tokens, its connection busy
st = socket.create_connection(("127.0.0.1", port))
body = json.dumps({"prompt": "Once", "max_tokens": 200, "temperature": 0, "stream": True}).encode()
st.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
st.settimeout(cap)
first = st.recv(4096)
assert first.startswith(b"HTTP/1.1 200"), first[:200]
# headers trickling forever: cut with 408, and not before the deadline
reply, dt = trickle(b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10000)
assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout", reply
assert dt >= 0.95, dt
# a body trickling forever: the same
reply, dt = trickle(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"{" * 100000)
assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
# the stream began before both and its deadline passed long ago: it is still open
st.setblocking(False)
try:
    more = st.recv(4096)
    assert more, "the stream was cut"
except BlockingIOError:
    pass
st.close()
print(f"trickling requests cut after {dt:.2f} s (timeout 1 s); the parked stream stayed open")
PY
curl -s "http://127.0.0.1:$hport/metrics" >"$tmp/m2.txt"
grep -q '^edgespec_http_connections_timed_out_total 2$' "$tmp/m2.txt" && grep -q '^edgespec_http_connections_refused_total 0$' "$tmp/m2.txt" &&
  grep -q '^edgespec_http_connections [0-9]' "$tmp/m2.txt" && ok || bad "connection metrics: $(grep http_conn "$tmp/m2.txt")"
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s2")"
grep -q "connections 0 refused (limit), 2 cut (request timeout)" "$tmp/s2" && ok || bad "the cuts are not in the stats: $(tail -c 300 "$tmp/s2")"
es_test_finish test_http_conns
