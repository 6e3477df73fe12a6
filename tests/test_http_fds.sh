#!/usr/bin/env bash
# test_http_fds.sh — `edgespec serve` out of file descriptors (RLIMIT_NOFILE 64, 100 idle HTTP
# connections that each sent one header line): the HTTP and edge listeners pause accepting instead of
# spinning on a listener that stays ready, say so at most once per 10 s instead of once per failed
# accept (which wrote megabytes of "Error from accept() call" per second), and serve again once
# descriptors free up: a /health request queued in the backlog meanwhile is answered.
. "$(dirname "$0")/lib.sh"
es_test_init http-fds
model=$models/stories260K.gguf
es_reap_on_exit

: >"$tmp/serve.err"
(ulimit -n 64 && exec "$bin" serve -m "$model" --port 0 --http-port 0 -t 1 -v >"$tmp/serve.out" 2>"$tmp/serve.err") &
pid=$!
pids+=("$pid")
hport=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_HTTP")
eport=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_LISTEN")
[ -n "$hport" ] && [ -n "$eport" ] || { bad "serve did not start: $(head -c 400 "$tmp/serve.err")"; es_test_finish test_http_fds; exit 1; }
wait_line "$tmp/serve.err" "$pid" '^edgespec serve: \(HTTP API ready\).*' >/dev/null

python3 - "$hport" "$eport" "$tmp/serve.err" "$ES_WAIT_CAP_S" <<'PY' && ok || bad "descriptor exhaustion: $(grep -c 'accept' "$tmp/serve.err") accept lines; $(tail -c 600 "$tmp/serve.err")"
import socket, sys, time
hport, eport, log, cap = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def accept_lines():
    # ours, and libevent's own line when no error callback is set (the old behaviour)
    return sum("accept failed" in l or "accept() call" in l for l in open(log, errors="replace"))
t0 = time.monotonic()
idle = []
for _ in range(100):  # more than the server has descriptors for
    s = socket.create_connection(("127.0.0.1", hport))
    s.sendall(b"GET /health HTTP/1.1\r\n")  # one header line, then nothing
    idle.append(s)
# the event: the server reports running out of descriptors
while accept_lines() == 0:
    assert time.monotonic() - t0 < cap, "the server never reported failing accepts"
    time.sleep(0.05)
# a /health request and an edge connection wait in the backlogs while the idle ones hold every descriptor
h = socket.create_connection(("127.0.0.1", hport))
h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
e = socket.create_connection(("127.0.0.1", eport))
for s in idle:
    s.close()
h.settimeout(cap)
reply = b""
while not reply.endswith(b"}") and b"\r\n\r\n" not in reply or len(reply) < 20:
    chunk = h.recv(4096)
    if not chunk:
        break
    reply += chunk
assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
elapsed = time.monotonic() - t0
n = accept_lines()
# at most one line per 10 s per listener (plus the first of each): the old code wrote one per failure
assert n <= 2 * (2 + elapsed / 10), (n, elapsed)
print(f"out of descriptors: {n} accept lines in {elapsed:.1f} s; /health answered after the idle connections left")
PY
kill -TERM "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly after running out of descriptors: $(tail -c 300 "$tmp/serve.err")"
es_test_finish test_http_fds
