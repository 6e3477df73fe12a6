#!/usr/bin/env bash
# soak.sh — a load soak of the edge–server split: `edgespec serve` (stories260K target, HTTP API on)
# under EDGES edge clients (`edgespec edge` processes in loops, draft-mid / draft-small drafts, chain
# and tree) and HTTP streaming clients (/v1/completions, stream: true) for DURATION seconds, with
# random disconnects (an edge process SIGKILLed mid-generation, an HTTP stream dropped mid-way), and
# HOSTILE clients sending bad traffic to both ports (garbage and truncated frames, byte-by-byte
# trickles and silent connections on the edge port; malformed requests, oversized and trickled
# bodies, invalid JSON, NUL in prompts, huge headers, half-sent requests on the HTTP port).
# Samples the server's RSS (/proc/PID/status VmRSS) and /metrics every few seconds; prints one JSON
# summary at the end: requests served, errors by kind, hostile inputs sent and how each was answered,
# the server's RSS, open descriptors and threads after warm-up and at the end, p99 inter-token latency per time window (from
# the clients: gaps between stdout writes of an edge — one write per verification round — and between
# SSE events of an HTTP stream), KV pages used after everyone left, RSS after warm-up and at the end,
# and a verdict on whether the RSS grew by more than 10 % after warm-up.
#
#   bench/soak.sh DURATION_SECONDS [EDGES=64] [HTTP=16]
#   env: BUILD (build), THREADS (server threads, 1), HOSTILE (4 clients of bad traffic), MAX_TOKENS (96), KILL_PCT (10: % of clients cut
#        mid-generation), WINDOW_S (10), WARMUP_S (min(10, DURATION/5)), SAMPLE_S (2), TARGET, DRAFTS
#        (space-separated GGUFs), KEEP_LOG (1: keep the server log in $BUILD/soak-serve.log)
#
# Not part of `make test` (it runs for minutes). Needs python3 and the converted test models
# (scripts/make-test-models.sh, run by `make`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:?usage: bench/soak.sh DURATION_SECONDS [EDGES=64] [HTTP=16]}
edges=${2:-64}
https=${3:-16}
build=${BUILD:-$here/build}
bin=$build/edgespec
models=${ES_TEST_MODELS:-$build/models}
target=${TARGET:-$models/stories260K.gguf}
drafts=${DRAFTS:-"$models/draft-mid.gguf $models/draft-small.gguf"}
threads=${THREADS:-1}
[ -x "$bin" ] || { echo "soak: $bin not built (make)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "soak: python3 is required" >&2; exit 1; }
if [ ! -f "$target" ]; then
  EDGESPEC_MODELS=${EDGESPEC_MODELS:-$here/../shared/models} "$here/scripts/make-test-models.sh" "$bin" "$models" >&2
fi
tmp=$(mktemp -d)
spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
  [ "${KEEP_LOG:-0}" = 1 ] && cp "$tmp/serve.err" "$build/soak-serve.log" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

max_sessions=$((edges + https + 16))
"$bin" serve -m "$target" --port 0 --http-port 0 -t "$threads" --max-sessions "$max_sessions" \
  --max-connections $((edges * 2 + https * 2 + 64)) >"$tmp/serve.out" 2>"$tmp/serve.err" &
spid=$!
port= hport=
for _ in $(seq 1 300); do
  port=$(sed -n 's/^listening on [^ ]*:\([0-9][0-9]*\)$/\1/p' "$tmp/serve.err" | head -n 1)
  hport=$(sed -n 's|^HTTP API listening on http://.*:\([0-9][0-9]*\)$|\1|p' "$tmp/serve.err" | head -n 1)
  [ -n "$port" ] && [ -n "$hport" ] && break
  kill -0 "$spid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] && [ -n "$hport" ] || { echo "soak: the server did not start:" >&2; cat "$tmp/serve.err" >&2; exit 1; }

python3 - "$bin" "$spid" "$port" "$hport" "$dur" "$edges" "$https" "$drafts" "${HOSTILE:-4}" <<'EOF'
import http.client, json, os, random, re, signal, subprocess, sys, threading, time

import socket
binp, spid, port, hport, dur, n_edge, n_http, drafts, n_hostile = sys.argv[1:10]
n_hostile = int(n_hostile)
spid, port, hport, dur, n_edge, n_http = int(spid), int(port), int(hport), float(dur), int(n_edge), int(n_http)
drafts = drafts.split()
max_tokens = int(os.environ.get("MAX_TOKENS", "96"))
kill_pct = float(os.environ.get("KILL_PCT", "10"))
window_s = float(os.environ.get("WINDOW_S", "10"))
warmup_s = float(os.environ.get("WARMUP_S", str(min(10.0, dur / 5))))
sample_s = float(os.environ.get("SAMPLE_S", "2"))
prompts = ["Once upon a time", "The little dog", "One day, Lily went to the park", "Tom had a red ball",
           "There was a big tree", "The sun was shining and", "A girl named Sue", "Ben wanted to play"]

lock = threading.Lock()
t_start = time.monotonic()
stop = threading.Event()
served = {"edge": 0, "http": 0}
cut = {"edge": 0, "http": 0}          # disconnects we caused on purpose
errors = {}                           # kind -> count
examples = {}                         # kind -> the first message of that kind
gaps = {"edge": {}, "http": {}}       # window index -> [seconds]
tokens = {"edge": 0, "http": 0}
procs = set()

def now():
    return time.monotonic() - t_start

def err(kind, msg=""):
    with lock:
        errors[kind] = errors.get(kind, 0) + 1
        if msg and kind not in examples:
            examples[kind] = msg[-300:]

def gap(kind, t, g):
    w = int(t // window_s)
    with lock:
        gaps[kind].setdefault(w, []).append(g)

def classify(text):
    t = text.lower()
    for k in ("busy", "timeout", "context", "refused", "unreachable", "shutdown", "protocol", "malformed"):
        if k in t:
            return k
    return "other"

def edge_worker(i):
    rnd = random.Random(i)
    while not stop.is_set():
        d = drafts[i % len(drafts)]
        cmd = [binp, "edge", "-d", d, "--server", "127.0.0.1:%d" % port, "-p", rnd.choice(prompts),
               "-n", str(max_tokens), "--spec", "tree" if i % 2 else "chain", "-t", "1", "--reconnect", "2",
               "--io-timeout", "30"]
        kill_at = rnd.uniform(0.05, 1.5) if rnd.uniform(0, 100) < kill_pct else None
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with lock:
            procs.add(p)
        t0 = time.monotonic()
        last = None
        killed = False
        os.set_blocking(p.stdout.fileno(), False)
        while True:
            if kill_at is not None and time.monotonic() - t0 > kill_at and p.poll() is None:
                p.kill()
                killed = True
            try:
                b = os.read(p.stdout.fileno(), 65536)
            except BlockingIOError:
                b = None
            if b:
                t = now()
                if last is not None:
                    gap("edge", t, t - last)
                last = t
            elif b == b"" or (b is None and p.poll() is not None and stop.is_set()):
                break
            else:
                time.sleep(0.002)
            if stop.is_set() and p.poll() is None:
                p.kill()
                killed = True
        rc = p.wait()
        e = p.stderr.read().decode(errors="replace")
        with lock:
            procs.discard(p)
        m = re.search(r"generated (\d+) tokens", e)
        if killed or (stop.is_set() and rc == -signal.SIGKILL):
            with lock:
                cut["edge"] += 1
        elif rc == 0:
            with lock:
                served["edge"] += 1
                if m:
                    tokens["edge"] += int(m.group(1))
        else:
            lastl = e.strip().splitlines()[-1] if e.strip() else "exit %d" % rc
            err("edge_" + classify(lastl), "rc %d: %s" % (rc, e.strip()[-600:]))

def http_worker(i):
    rnd = random.Random(1000 + i)
    while not stop.is_set():
        cut_after = rnd.randint(1, max_tokens - 1) if rnd.uniform(0, 100) < kill_pct else None
        body = json.dumps({"model": "edgespec", "prompt": rnd.choice(prompts), "max_tokens": max_tokens,
                           "temperature": 0, "stream": True})
        c = http.client.HTTPConnection("127.0.0.1", hport, timeout=60)
        try:
            c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                r.read()
                err("http_%d" % r.status)
                c.close()
                time.sleep(0.1)
                continue
            last = None
            n = 0
            done = False
            for line in r:
                if not line.startswith(b"data:"):
                    continue
                if line.strip() == b"data: [DONE]":
                    done = True
                    break
                t = now()
                if last is not None:
                    gap("http", t, t - last)
                last = t
                n += 1
                if cut_after is not None and n >= cut_after:
                    break
                if stop.is_set():
                    break
            c.close()
            with lock:
                if done:
                    served["http"] += 1
                    tokens["http"] += n
                elif cut_after is not None or stop.is_set():
                    cut["http"] += 1
                else:
                    errors["http_truncated"] = errors.get("http_truncated", 0) + 1
        except Exception as ex:
            c.close()
            if not stop.is_set():
                err("http_" + type(ex).__name__, str(ex))

hostile = {}                          # attack -> {"sent": n, answers...}

def hostile_note(kind, outcome):
    with lock:
        h = hostile.setdefault(kind, {})
        h[outcome] = h.get(outcome, 0) + 1

def read_all(s, limit=1 << 16):
    data = b""
    try:
        while len(data) < limit:
            b = s.recv(4096)
            if not b:
                break
            data += b
    except socket.timeout:
        return data, "open"
    except OSError:
        return data, "reset"
    return data, "closed"

def http_attack(rnd):
    kinds = {
        "garbage_request_line": lambda: b"\x16\x03\x01 GARBAGE\r\n\r\n",
        "invalid_json": lambda: b"POST /v1/completions HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"prompt\":",
        "nul_in_prompt": lambda: b'POST /v1/completions HTTP/1.1\r\nContent-Length: 43\r\n\r\n{"prompt":"Once\\u0000 upon","max_tokens":4}',
        "oversized_body": lambda: b"POST /v1/completions HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 65536,
        "huge_header": lambda: b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
        "half_request": lambda: b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        "wrong_method": lambda: b"BREW /v1/models HTTP/1.1\r\n\r\n",
    }
    kind = rnd.choice(sorted(kinds))
    try:
        s = socket.create_connection(("127.0.0.1", hport), timeout=5)
        try:
            s.sendall(kinds[kind]())
        except OSError:
            pass
        if kind == "half_request":
            s.settimeout(0.5)  # give up early: the server's request timeout cuts it later
        data, how = read_all(s)
        s.close()
        status = data[9:12].decode(errors="replace") if data.startswith(b"HTTP/1.") else ("none_" + how)
        hostile_note("http_" + kind, status)
    except OSError as ex:
        hostile_note("http_" + kind, "connect_" + type(ex).__name__)

def edge_attack(rnd):
    kinds = ["garbage", "truncated_header", "oversized_length", "trickle", "silent"]
    kind = rnd.choice(kinds)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if kind == "garbage":
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4096))))
        elif kind == "truncated_header":
            s.sendall(b"\x01\x00\x01\x00\x00")
        elif kind == "oversized_length":  # a header claiming a 4 GiB payload
            s.sendall(b"\x01\x01\x00\x00" + b"\x00\x00\x00\x00" + b"\xff\xff\xff\xff")
        elif kind == "trickle":
            for b in b"\x01\x01\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00":
                s.sendall(bytes([b]))
                time.sleep(0.05)
        s.settimeout(0.5 if kind == "silent" else 5)
        data, how = read_all(s)
        s.close()
        hostile_note("edge_" + kind, how)
    except OSError as ex:
        hostile_note("edge_" + kind, "connect_" + type(ex).__name__)

def hostile_worker(i):
    rnd = random.Random(5000 + i)
    while not stop.is_set():
        (http_attack if rnd.random() < 0.5 else edge_attack)(rnd)

def fds_threads():
    try:
        n_fd = len(os.listdir("/proc/%d/fd" % spid))
        with open("/proc/%d/status" % spid) as f:
            th = next(int(l.split()[1]) for l in f if l.startswith("Threads:"))
        return n_fd, th
    except (OSError, StopIteration):
        return None, None

def rss_kb():
    try:
        with open("/proc/%d/status" % spid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None

def metrics():
    try:
        c = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(edgespec_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out

samples = []
def sampler():
    while not stop.is_set():
        m = metrics()
        samples.append({"t": round(now(), 1), "rss_kb": rss_kb(),
                        "kv_blocks_used": m.get("edgespec_kv_blocks_used"),
                        "sessions_edge": m.get('edgespec_active_sessions{kind="edge"}'),
                        "sessions_http": m.get('edgespec_active_sessions{kind="http"}'),
                        "generated_tokens": m.get("edgespec_generated_tokens_total")})
        stop.wait(sample_s)

threads = [threading.Thread(target=edge_worker, args=(i,), daemon=True) for i in range(n_edge)]
threads += [threading.Thread(target=http_worker, args=(i,), daemon=True) for i in range(n_http)]
threads += [threading.Thread(target=hostile_worker, args=(i,), daemon=True) for i in range(n_hostile)]
st = threading.Thread(target=sampler, daemon=True)
st.start()
for t in threads:
    t.start()
fd0, th0 = fds_threads()  # before any traffic
time.sleep(warmup_s)
rss_start = rss_kb()
fd_warm, th_warm = fds_threads()
time.sleep(max(0.0, dur - warmup_s))
stop.set()
for p in list(procs):
    try:
        p.kill()
    except Exception:
        pass
for t in threads:
    t.join(timeout=60)
st.join(timeout=15)
# everyone has left: the pool must drain
kv_after = None
for _ in range(50):
    m = metrics()
    kv_after = m.get("edgespec_kv_blocks_used")
    if kv_after == 0:
        break
    time.sleep(0.2)
rss_end = rss_kb()
alive = rss_end is not None
# descriptors of connections that just closed are released at the next sweep: wait for the count to
# settle back (bounded), then compare with the count before any traffic
fd_end, th_end = fds_threads()
for _ in range(100):
    if fd_end is None or fd0 is None or fd_end <= fd0:
        break
    time.sleep(0.1)
    fd_end, th_end = fds_threads()

def p99(xs):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000, 2) if xs else None

windows = []
for w in sorted(set(gaps["edge"]) | set(gaps["http"])):
    e, h = gaps["edge"].get(w, []), gaps["http"].get(w, [])
    windows.append({"from_s": w * window_s, "to_s": (w + 1) * window_s,
                    "edge_p99_ms": p99(e), "edge_rounds": len(e), "http_p99_ms": p99(h), "http_tokens": len(h)})
growth = (rss_end - rss_start) / rss_start if (rss_start and rss_end) else None
summary = {
    "duration_s": dur, "edges": n_edge, "http_clients": n_http, "max_tokens": max_tokens,
    "kill_pct": kill_pct, "warmup_s": warmup_s,
    "served": served, "tokens": tokens, "disconnects_injected": cut, "errors": errors, "error_examples": examples,
    "itl_p99_ms_by_window": windows,
    "itl_p99_ms_overall": {"edge": p99(sum(gaps["edge"].values(), [])), "http": p99(sum(gaps["http"].values(), []))},
    "kv_blocks_used_after": kv_after, "server_alive": alive,
    "rss_kb": {"start_after_warmup": rss_start, "end": rss_end,
               "max": max((s["rss_kb"] for s in samples if s["rss_kb"]), default=None)},
    "rss_growth_pct": round(growth * 100, 2) if growth is not None else None,
    "hostile_clients": n_hostile, "hostile": hostile,
    "fds": {"before_traffic": fd0, "after_warmup": fd_warm, "end": fd_end},
    "threads": {"before_traffic": th0, "after_warmup": th_warm, "end": th_end},
    "verdict": ("rss_grew" if growth is not None and growth > 0.10 else "rss_stable") if growth is not None else "unknown",
    "samples": samples,
}
print(json.dumps(summary, indent=1))
EOF
