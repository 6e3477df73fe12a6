#!/usr/bin/env bash
# test_http.sh — the OpenAI-compatible HTTP API of `edgespec serve --http-port`, with curl:
#  - /health answers 503 {"status":"loading"} while the model loads, then 200;
#  - /v1/models, /v1/models/ID (404 for another id);
#  - every error status: 401 (missing / wrong bearer key), 404, 405 (+ Allow), 413, 400 (invalid JSON,
#    wrong type, negative max_tokens, temperature out of range, top_p, n, prompt + max_tokens beyond the
#    context naming both numbers), 503 when the scheduler is full; errors in OpenAI form;
#  - a greedy completion and a chat (fallback template) equal `edgespec run` on the same prompt text;
#    streaming (SSE) gives the same text, a usage chunk and [DONE]; stop strings cut the text;
#  - a client that disconnects mid-stream, or mid plain request, frees its session at once: the KV
#    pages in use in /metrics return to 0 while the generation is held (parked by a test hook) and could
#    never have ended by itself (also through `edgespec edge --listen`, whose server session closes
#    when its HTTP client leaves);
#  - /metrics is valid Prometheus text with the documented names, and its counters increase.
. "$(dirname "$0")/lib.sh"
es_test_init http
model=$models/stories260K.gguf
command -v curl >/dev/null || { echo "test_http: curl is required (scripts/install-deps.sh installs it)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test_http: python3 is required" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

# start LOG ARGS...: starts serve, waits for the HTTP port line; sets $pid and $hport
start() {
  local log=$1; shift
  : >"$log" # emptied before the server starts: wait_line must not find an earlier server's port
  "$bin" serve -m "$model" --port 0 --http-port 0 -t 1 "$@" >"$log.out" 2>"$log" &
  pid=$!
  pids+=("$pid")
  hport=$(wait_line "$log" "$pid" "$ES_RE_HTTP")
  [ -n "$hport" ] || { bad "no HTTP port line: $(head -c 400 "$log")"; echo "test_http: $pass passed, $fail failed"; exit 1; }
}
# wait_ready PORT: until /health says 200
wait_ready() {
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health")" = 200 ] && return 0
    sleep 0.05
  done
  return 1
}
# req NAME METHOD PATH [curl args...]: body in $tmp/NAME.body, status in $code, headers in $tmp/NAME.hdr
req() {
  local name=$1 method=$2 path=$3; shift 3
  code=$(curl -s -X "$method" -o "$tmp/$name.body" -D "$tmp/$name.hdr" -w '%{http_code}' "$@" "http://127.0.0.1:$port$path")
}
KEY=test-key-123
AUTH=(-H "Authorization: Bearer $KEY")
want() { # NAME CODE: status check + OpenAI error form for errors
  if [ "$code" = "$2" ]; then ok; else bad "$1: status $code, want $2: $(head -c 300 "$tmp/$1.body")"; fi
  if [ "$2" -ge 400 ]; then
    python3 - "$tmp/$1.body" <<'EOF' && ok || bad "$1: not an OpenAI error object: $(head -c 300 "$tmp/$1.body")"
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert isinstance(e["message"], str) and e["message"] and isinstance(e["type"], str) and "code" in e
EOF
  fi
}
body_has() { if grep -qF -- "$2" "$tmp/$1.body"; then ok; else bad "$1: '$2' not in $(head -c 300 "$tmp/$1.body")"; fi; }
metric() { # PORT NAME: the value of one sample line (first match), "" if absent
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'
}

# ---- 1. loading: /health is honest while the model loads ----
# the server holds its loading phase until the gate file exists (EDGESPEC_TEST_LOAD_GATE, a test hook)
gate=$tmp/load-gate
rm -f "$gate"
EDGESPEC_TEST_LOAD_GATE=$gate start "$tmp/s1" --api-key "$KEY" --ctx-size 256 --http-max-body 4K --max-sessions 8
port=$hport
req health_loading GET /health
if [ "$code" = 503 ] && grep -qF '"loading"' "$tmp/health_loading.body"; then ok; else bad "health while loading: $code $(cat "$tmp/health_loading.body")"; fi
req v1_loading POST /v1/completions "${AUTH[@]}" -d '{"prompt":"x"}'
[ "$code" = 503 ] && ok || bad "completion while loading: $code"
touch "$gate"
wait_ready "$port" && ok || bad "/health never became 200"
req health GET /health
want health 200
body_has health '"ok"'

# ---- 2. models ----
req models GET /v1/models "${AUTH[@]}"
want models 200
body_has models '"id":"stories260K"'
body_has models '"object":"list"'
req model1 GET /v1/models/stories260K "${AUTH[@]}"
want model1 200
body_has model1 '"object":"model"'
req model404 GET /v1/models/gpt-4 "${AUTH[@]}"
want model404 404
body_has model404 model_not_found

# ---- 3. error statuses ----
req noauth POST /v1/completions -d '{"prompt":"x"}'
want noauth 401
grep -qi '^WWW-Authenticate: Bearer' "$tmp/noauth.hdr" && ok || bad "401 without WWW-Authenticate"
req badauth POST /v1/completions -H "Authorization: Bearer wrong" -d '{"prompt":"x"}'
want badauth 401
body_has badauth invalid_api_key
req badauth2 GET /v1/models -H "Authorization: Bearer ${KEY}x"
want badauth2 401
req notfound GET /v2/nothing "${AUTH[@]}"
want notfound 404
req notfound2 POST /v1/completion "${AUTH[@]}" -d '{}'
want notfound2 404
req method GET /v1/completions "${AUTH[@]}"
want method 405
grep -qi '^Allow: POST' "$tmp/method.hdr" && ok || bad "405 without Allow: POST"
req method2 POST /health -d '{}'
want method2 405
req method3 DELETE /v1/models "${AUTH[@]}"
want method3 405
head -c 5000 /dev/zero | tr '\0' ' ' >"$tmp/big.json"
req big POST /v1/completions "${AUTH[@]}" --data-binary @"$tmp/big.json"
want big 413
body_has big request_too_large
# what libevent answers before our handler sees a request (a malformed request line, an unknown
# method, headers over the limit, a bad request pipelined after a good one) is JSON too, not HTML
python3 - "$port" <<'EOF' && ok || bad "libevent's own error pages are not OpenAI JSON"
import json, socket, sys
port = int(sys.argv[1])
def send(raw):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(raw); s.settimeout(30)
    d = b""
    while True:
        b = s.recv(65536)
        if not b: break
        d += b
    return d
# Known gap, not checked: when libevent answers twice on one connection (headers over the limit while
# the client still sends them, or a malformed request pipelined behind a good one) its first page
# can stay HTML; only the last answer is checked for the oversized headers
cases = [(b"\x16\x03\x01 GARBAGE\r\n\r\n", 400, True), (b"BREW /v1/models HTTP/1.1\r\n\r\n", 501, True),
         (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n", None, False)]
for raw, status, whole in cases:
    d = send(raw)
    last = d[d.rindex(b"HTTP/1.1 "):]
    head, _, body = last.partition(b"\r\n\r\n")
    code = int(head[9:12])
    assert status is None and code in (400, 413) or code == status, (code, head)
    assert b"Content-Type: application/json" in head, head
    assert not whole or b"<HTML>" not in d, d[-300:]
    e = json.loads(body)["error"]
    assert e["message"] and e["type"] == "invalid_request_error", e
EOF
bad400() { # NAME BODY [NEEDLE]
  req "$1" POST /v1/completions "${AUTH[@]}" -H 'Content-Type: application/json' --data-binary "$2"
  want "$1" 400
  [ -z "${3:-}" ] || body_has "$1" "$3"
}
bad400 json '{"prompt": "x",' invalid_json
bad400 nobody '' invalid_json
bad400 type_prompt '{"prompt": 5}' '"param":"prompt"'
bad400 type_maxtok '{"prompt": "x", "max_tokens": "ten"}' '"param":"max_tokens"'
bad400 neg_maxtok '{"prompt": "x", "max_tokens": -5}' 'at least 1'
bad400 neg_temp '{"prompt": "x", "temperature": -0.5}' '"param":"temperature"'
bad400 big_temp '{"prompt": "x", "temperature": 2.5}' '"param":"temperature"'
bad400 top_p '{"prompt": "x", "top_p": 0}' '"param":"top_p"'
bad400 n17 '{"prompt": "x", "n": 17}' '"param":"n"'
bad400 stream_type '{"prompt": "x", "stream": "yes"}' '"param":"stream"'
bad400 token_range '{"prompt": [1, 99999]}' 'outside the vocabulary'
bad400 context '{"prompt": "Once upon a time", "max_tokens": 300}' 'context_length_exceeded'
body_has context '256'
body_has context '300 for the completion'
req chat_bad POST /v1/chat/completions "${AUTH[@]}" -d '{"messages": [{"role": "robot", "content": "x"}]}'
want chat_bad 400
body_has chat_bad 'messages[0].role'

# ---- 4. greedy results equal `edgespec run` ----
prompt="Once upon a time"
"$bin" run -m "$model" -p "$prompt" -n 40 -t 1 --temp 0 --json >"$tmp/run.json" 2>"$tmp/run.err" && ok || bad "run failed: $(cat "$tmp/run.err")"
req compl POST /v1/completions "${AUTH[@]}" -d "{\"model\":\"whatever\",\"prompt\":\"$prompt\",\"max_tokens\":40,\"temperature\":0}"
want compl 200
python3 - "$tmp/compl.body" "$tmp/run.json" <<'EOF' && ok || bad "completion differs from edgespec run: $(head -c 400 "$tmp/compl.body")"
import json, sys
r = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2]))
assert r["object"] == "text_completion" and r["model"] == "whatever", r
c = r["choices"][0]
assert c["text"] == ref["text"], (c["text"], ref["text"])
assert c["finish_reason"] == ("length" if ref["stop_reason"] == "length" else "stop"), c
u = r["usage"]
assert u["prompt_tokens"] == ref["n_prompt"] and u["completion_tokens"] == ref["n_generated"], (u, ref["n_prompt"], ref["n_generated"])
assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
EOF
# token-id prompt: the same tokens, the same text
ids=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["prompt_tokens"]))' "$tmp/run.json")
req compl_ids POST /v1/completions "${AUTH[@]}" -d "{\"prompt\":$ids,\"max_tokens\":40,\"temperature\":0}"
want compl_ids 200
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["choices"][0]["text"] == json.load(open(sys.argv[2]))["text"]' \
  "$tmp/compl_ids.body" "$tmp/run.json" && ok || bad "token-id prompt differs"

# streaming: same text, usage chunk, [DONE]
curl -sN "${AUTH[@]}" "http://127.0.0.1:$port/v1/completions" \
  -d "{\"prompt\":\"$prompt\",\"max_tokens\":40,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/stream.txt"
python3 - "$tmp/stream.txt" "$tmp/run.json" <<'EOF' && ok || bad "streamed completion wrong: $(head -c 600 "$tmp/stream.txt")"
import json, sys
raw = open(sys.argv[1]).read(); ref = json.load(open(sys.argv[2]))
events = [e for e in raw.split("\n\n") if e.strip()]
assert all(e.startswith("data: ") for e in events), events[:3]
assert events[-1] == "data: [DONE]", events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
usage = [c for c in chunks if c.get("usage")]
text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
assert text == ref["text"], (text, ref["text"])
assert all(c["object"] == "text_completion" for c in chunks)
fin = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
assert fin == ["length"], fin
assert len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == ref["n_generated"] and usage[0]["choices"] == []
EOF

# chat with the fallback template ("role: text" lines, then "assistant:") equals run on that text
"$bin" run -m "$model" -p "$(printf 'user: Tell me a story.\nassistant:')" -n 30 -t 1 --temp 0 --json >"$tmp/run_chat.json" 2>/dev/null && ok || bad "run (chat text) failed"
req chat POST /v1/chat/completions "${AUTH[@]}" -d '{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":30,"temperature":0}'
want chat 200
python3 - "$tmp/chat.body" "$tmp/run_chat.json" <<'EOF' && ok || bad "chat differs from run: $(head -c 400 "$tmp/chat.body")"
import json, sys
r = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2]))
assert r["object"] == "chat.completion"
m = r["choices"][0]["message"]
assert m["role"] == "assistant" and m["content"] == ref["text"], (m, ref["text"])
assert r["usage"]["prompt_tokens"] == ref["n_prompt"]
EOF
curl -sN "${AUTH[@]}" "http://127.0.0.1:$port/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":30,"temperature":0,"stream":true}' >"$tmp/chat_stream.txt"
python3 - "$tmp/chat_stream.txt" "$tmp/run_chat.json" <<'EOF' && ok || bad "streamed chat wrong: $(head -c 600 "$tmp/chat_stream.txt")"
import json, sys
raw = open(sys.argv[1]).read(); ref = json.load(open(sys.argv[2]))
events = [e for e in raw.split("\n\n") if e.strip()]
assert events[-1] == "data: [DONE]"
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
assert text == ref["text"], (text, ref["text"])
assert chunks[-1]["choices"][0]["finish_reason"] == "length" and not any(c.get("usage") for c in chunks)
EOF

# stop strings: the text ends before the first match, finish_reason "stop"
stopword=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["text"]; print(t.split()[4])' "$tmp/run.json")
req stop POST /v1/completions "${AUTH[@]}" -d "{\"prompt\":\"$prompt\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"zzz\",\"$stopword\"]}"
want stop 200
python3 - "$tmp/stop.body" "$tmp/run.json" "$stopword" <<'EOF' && ok || bad "stop string: $(head -c 400 "$tmp/stop.body")"
import json, sys
r = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2])); w = sys.argv[3]
c = r["choices"][0]
assert c["text"] == ref["text"][:ref["text"].index(w)], (c["text"], w)
assert c["finish_reason"] == "stop"
assert r["usage"]["completion_tokens"] < ref["n_generated"]
EOF

# ---- 5. /metrics: Prometheus text, names, counters increase ----
curl -s "http://127.0.0.1:$port/metrics" >"$tmp/m1.txt"
curl -s "${AUTH[@]}" "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"The dog","max_tokens":8,"temperature":0}' >/dev/null
curl -s -D "$tmp/m2.hdr" "http://127.0.0.1:$port/metrics" >"$tmp/m2.txt"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$tmp/m2.hdr" && ok || bad "metrics content type"
python3 - "$tmp/m1.txt" "$tmp/m2.txt" <<'EOF' && ok || bad "metrics: $(head -c 800 "$tmp/m2.txt")"
import re, sys
sample = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? (?P<value>-?[0-9.eE+-]+|NaN|[+-]Inf)$')
def parse(path):
    text = open(path).read()
    assert text.endswith("\n")
    types, helps, values, fam = {}, set(), {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            fam = line.split()[2]; helps.add(fam); continue
        if line.startswith("# TYPE "):
            _, _, name, t = line.split(); assert name == fam and t in ("counter", "gauge", "histogram"), line
            types[name] = t; continue
        m = sample.match(line); assert m, line
        name = m.group("name")
        base = re.sub(r'_(bucket|sum|count)$', '', name) if types.get(re.sub(r'_(bucket|sum|count)$', '', name)) == "histogram" else name
        assert base == fam and base in types and base in helps, (line, fam)
        values[name + (m.group("labels") or "")] = float(m.group("value"))
    return types, values
t1, v1 = parse(sys.argv[1]); t2, v2 = parse(sys.argv[2])
need = {"edgespec_requests_total": "counter", "edgespec_prompt_tokens_total": "counter", "edgespec_generated_tokens_total": "counter",
        "edgespec_http_prompt_tokens_total": "counter", "edgespec_http_completion_tokens_total": "counter",
        "edgespec_tokens_per_second": "gauge", "edgespec_active_sessions": "gauge", "edgespec_kv_blocks_used": "gauge",
        "edgespec_kv_blocks_total": "gauge", "edgespec_batch_rows": "histogram", "edgespec_drafts_total": "counter",
        "edgespec_draft_tokens_total": "counter", "edgespec_accepted_tokens_total": "counter", "edgespec_acceptance_length": "gauge",
        "edgespec_refused_total": "counter", "edgespec_groups": "gauge", "edgespec_group_trial_tokens_per_second": "gauge"}
for n, t in need.items(): assert t2.get(n) == t, (n, t2.get(n))
assert v2['edgespec_group_trial_tokens_per_second{arm="one"}'] >= 0 and v2['edgespec_group_trial_tokens_per_second{arm="split"}'] >= 0
assert 'edgespec_active_sessions{kind="edge"}' in v2 and 'edgespec_active_sessions{kind="http"}' in v2
assert v2.get('edgespec_device_info{backend="cpu",index="0",name=""}') == 1, [k for k in v2 if "device" in k]
# counters by session kind: every kind listed, and per counter the kinds sum to the unlabelled total
kinds = ("edge", "autoregressive", "server_draft")
for fam, total in (("edgespec_kind_generated_tokens_total", "edgespec_generated_tokens_total"),
                   ("edgespec_kind_prompt_tokens_total", "edgespec_prompt_tokens_total"),
                   ("edgespec_kind_drafts_total", "edgespec_drafts_total"),
                   ("edgespec_kind_accepted_tokens_total", "edgespec_accepted_tokens_total")):
    assert t2.get(fam) == "counter", fam
    assert sum(v2['%s{kind="%s"}' % (fam, k)] for k in kinds) == v2[total], (fam, [v2['%s{kind="%s"}' % (fam, k)] for k in kinds], v2[total])
assert v2['edgespec_kind_sessions_total{kind="autoregressive"}'] > v1['edgespec_kind_sessions_total{kind="autoregressive"}']
assert t2.get("edgespec_kind_active_sessions") == "gauge"
assert v2['edgespec_batch_rows_bucket{le="+Inf"}'] == v2["edgespec_batch_rows_count"] > 0
for k in ('edgespec_requests_total{endpoint="/metrics",status="200"}', 'edgespec_requests_total{endpoint="/v1/completions",status="200"}',
          "edgespec_generated_tokens_total", "edgespec_prompt_tokens_total", "edgespec_http_completion_tokens_total", "edgespec_batch_rows_count"):
    assert v2[k] > v1[k], (k, v1[k], v2[k])
for k, v in v1.items():  # counters never go down
    n = re.sub(r'\{.*', '', k)
    if t1.get(n) == "counter": assert v2[k] >= v, k
assert v2['edgespec_requests_total{endpoint="/v1/completions",status="401"}'] >= 2
assert v2['edgespec_requests_total{endpoint="/v1/completions",status="400"}'] >= 10
EOF
kv_total=$(metric "$port" edgespec_kv_blocks_total)
[ -n "$kv_total" ] && [ "$kv_total" -gt 0 ] && ok || bad "kv_blocks_total: '$kv_total'"

kill -INT "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s1")"
grep -q "http .* requests" "$tmp/s1" && ok || bad "no http line in the final stats: $(tail -c 400 "$tmp/s1")"

# ---- 6. the edge's local API, a full scheduler (503), clients that disconnect ----
# The server parks every session once it has generated 8 tokens (EDGESPEC_TEST_PARK_AFTER, a test
# hook: no further round, KV held, until the session is closed). A long generation therefore stays
# running for exactly as long as the test needs, on an idle machine or a starved one: every check
# below waits for an event (a first byte, a metric reaching a value), never for a time to pass.
EDGESPEC_TEST_PARK_AFTER=8 start "$tmp/s2" --max-sessions 2 --max-queue 0 # busy: 503 at once (the queue: test_http_queue.sh)
port=$hport
sport=$hport
wait_ready "$port" || bad "second server not ready"
eport=$(wait_line "$tmp/s2" "$pid" "$ES_RE_LISTEN")
"$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 --parallel 1 --queue 0 -t 1 \
  --http-api-key ekey >"$tmp/edge.out" 2>"$tmp/edge.err" &
edpid=$!
pids+=("$edpid")
lport=$(wait_line "$tmp/edge.err" "$edpid" "$ES_RE_HTTP")
[ -n "$lport" ] || { bad "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"; echo "test_http: $pass passed, $fail failed"; exit 1; }
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
# wait_nonempty FILE PID: until FILE has a byte, while PID (its writer) lives
wait_nonempty() {
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { [ -s "$1" ]; return; }
    sleep 0.05
  done
  return 1
}
port=$lport
req e_health GET /health
want e_health 200
req e_noauth POST /v1/completions -d '{"prompt":"x"}'
want e_noauth 401
req e_404 GET /nothing -H "Authorization: Bearer ekey"
want e_404 404
req e_400 POST /v1/chat/completions -H "Authorization: Bearer ekey" -d '{"messages":[],"max_tokens":3}'
want e_400 400
# the long edge generation: parked by the server after its first tokens, alive until its client leaves
curl -sN --max-time 600 -H "Authorization: Bearer ekey" "http://127.0.0.1:$lport/v1/completions" \
  -d '{"prompt":"Once","max_tokens":400,"temperature":0,"stream":true}' >"$tmp/e_long.txt" &
ecpid=$!
wait_nonempty "$tmp/e_long.txt" "$ecpid" && ok || bad "the edge streamed nothing"
wait_metric "$sport" 'edgespec_active_sessions{kind="edge"}' -eq 1 && ok || bad "the server does not see the edge session"
# one worker, no queue: a second edge request is refused while the first runs
req e_busy POST /v1/completions -H "Authorization: Bearer ekey" -d '{"prompt":"x","max_tokens":4}'
want e_busy 503

port=$sport
# a plain request whose client gives up: its session ends at once
curl -s --max-time 600 "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"Once","max_tokens":400,"temperature":0}' >/dev/null &
ppid_=$!
wait_metric "$port" 'edgespec_active_sessions{kind="http"}' -eq 1 && ok || bad "the plain request's session never ran"
kill "$ppid_" 2>/dev/null; wait "$ppid_" 2>/dev/null
wait_metric "$port" 'edgespec_active_sessions{kind="http"}' -eq 0 && ok || bad "a plain request's session outlived its client"
# a streaming client: running, holding KV; the scheduler is then full (edge + stream = 2 sessions)
curl -sN --max-time 600 "http://127.0.0.1:$port/v1/completions" -d '{"prompt":"Once","max_tokens":400,"temperature":0,"stream":true}' >"$tmp/long.txt" &
cpid=$!
wait_nonempty "$tmp/long.txt" "$cpid" && ok || bad "the stream sent nothing"
wait_metric "$port" 'edgespec_active_sessions{kind="http"}' -eq 1 && ok || bad "active http sessions should be 1"
wait_metric "$port" edgespec_kv_blocks_used -gt 0 && ok || bad "no KV pages in use while streaming"
req busy POST /v1/completions -d '{"prompt":"x","max_tokens":4}'
want busy 503
grep -qi '^Retry-After:' "$tmp/busy.hdr" && ok || bad "503 without Retry-After"
body_has busy server_busy
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
wait_metric "$port" 'edgespec_active_sessions{kind="http"}' -eq 0 && ok || bad "http session still active after its streaming client left"
grep -q '"finish_reason":"length"\|"finish_reason":"stop"' "$tmp/long.txt" && bad "the stream ended before its client left: the test proves nothing" || ok
# the edge's client leaves too: the edge cancels while it awaits a verdict, the server session closes;
# nothing holds KV any more
kill "$ecpid" 2>/dev/null; wait "$ecpid" 2>/dev/null
wait_metric "$port" edgespec_kv_blocks_used -eq 0 && ok || bad "KV pages not back to 0 after every client left"
wait_metric "$port" 'edgespec_active_sessions{kind="edge"}' -eq 0 && ok || bad "the edge's server session outlived its HTTP client"
grep -q '\[DONE\]' "$tmp/e_long.txt" && bad "the edge stream ended before its client left" || ok
# and the slots are free again
req after POST /v1/completions -d '{"prompt":"x","max_tokens":2}'
want after 200
curl -s "http://127.0.0.1:$lport/metrics" | grep -q "^edgespec_drafts_total" && ok || bad "edge metrics lack drafts"
kill -TERM "$edpid"
wait "$edpid"
[ $? -eq 0 ] && ok || bad "edge --listen did not stop cleanly: $(tail -c 300 "$tmp/edge.err")"
kill -TERM "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "second serve did not stop cleanly"
"$bin" edge -d "$models/draft-mid.gguf" --server 127.0.0.1:1 --listen 127.0.0.1:0 -t 1 --reconnect 0 >"$tmp/edge2.out" 2>"$tmp/edge2.err"
[ $? -eq 1 ] && grep -q "cannot connect" "$tmp/edge2.err" && ok || bad "edge --listen without a server: $(head -c 300 "$tmp/edge2.err")"

# ---- 7. the KV pool runs out mid-request: the tokens made are the client's ----
# 4 pages of 16 positions: the prompt is admitted, the generation runs out of pages after ~60 tokens.
# That is the server's condition, not the request's: the reply ends as "length" with what was made
# (plain and streaming), never as a 400 that loses the text.
start "$tmp/s3" --kv-memory 40K --ctx-size 256
port=$hport
wait_ready "$port" || bad "third server not ready"
req kvx POST /v1/completions -d "{\"prompt\":\"$prompt\",\"max_tokens\":200,\"temperature\":0}"
want kvx 200
"$bin" run -m "$model" -p "$prompt" -n 200 -t 1 --temp 0 --json >"$tmp/run200.json" 2>/dev/null || bad "run -n 200 failed"
python3 - "$tmp/kvx.body" "$tmp/run200.json" <<'EOF' && ok || bad "KV exhaustion: $(head -c 400 "$tmp/kvx.body")"
import json, sys
r = json.load(open(sys.argv[1])); ref = json.load(open(sys.argv[2]))
c = r["choices"][0]; u = r["usage"]
assert c["finish_reason"] == "length", c
assert 0 < u["completion_tokens"] < 200, u
assert ref["n_generated"] > u["completion_tokens"], (ref["n_generated"], u)
assert ref["text"].startswith(c["text"]) and len(c["text"]) > 20, (c["text"], ref["text"])
EOF
curl -sN "http://127.0.0.1:$port/v1/completions" -d "{\"prompt\":\"$prompt\",\"max_tokens\":200,\"temperature\":0,\"stream\":true}" >"$tmp/kvx_stream.txt"
python3 - "$tmp/kvx_stream.txt" "$tmp/kvx.body" <<'EOF' && ok || bad "KV exhaustion, streamed: $(tail -c 400 "$tmp/kvx_stream.txt")"
import json, sys
raw = open(sys.argv[1]).read(); plain = json.load(open(sys.argv[2]))
events = [e for e in raw.split("\n\n") if e.strip()]
assert events[-1] == "data: [DONE]"
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert not any("error" in c for c in chunks), chunks[-1]
text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
fin = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]]
assert fin == ["length"] and text == plain["choices"][0]["text"], (fin, text)
EOF
kill -TERM "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "third serve did not stop cleanly"

es_test_finish test_http
