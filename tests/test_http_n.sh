#!/usr/bin/env bash
# test_http_n.sh — n > 1: several choices per request, each its own session, gathered in order, on
# the server's HTTP API and on the edge-local API:
#  - greedy: n identical choices indexed 0..n-1, each equal to the n = 1 text, usage summing them;
#  - sampled with a seed (the server, whose sampled text follows from the seed alone): reproducible,
#    choice 0 equal to the n = 1 request with the same seed, the choices not all equal;
#  - streamed (completions and chat): every chunk names its choice; per index the text equals the
#    plain reply's, each choice gets its role chunk (chat) and its finish_reason, one [DONE], and the
#    usage chunk sums the choices;
#  - stop strings and logprobs apply per choice;
#  - more choices than sessions (serve --max-sessions 2, n = 3; edge --parallel 1, n = 2): the
#    choices that do not fit wait in the queue and the request completes;
#  - n outside 1..16 is 400.
. "$(dirname "$0")/lib.sh"
es_test_init http-n
model=$models/stories260K.gguf
draft=$models/draft-small.gguf
command -v curl >/dev/null || { echo "test_http_n: curl is required" >&2; exit 1; }
es_reap_on_exit

cat >"$tmp/n.py" <<'PY'
import json, sys, urllib.error, urllib.request
# the server: logprobs, and sampling reproducible from the seed. The edge-local API has no logprobs,
# and its sampled text also depends on how the drafts and verdicts fell (the server's tree-size hints),
# so there the sampled requests are checked for shape, and the streamed chat is compared greedy.
port, SERVER = int(sys.argv[1]), "server" in sys.argv[2:]
LP = SERVER
def post(path, body, stream=False):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), json.dumps(body).encode(), {"Content-Type": "application/json"})
    data = urllib.request.urlopen(req, timeout=300).read().decode()
    if not stream:
        return json.loads(data)
    events = [l[6:] for l in data.split("\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1, events[-3:]
    return [json.loads(e) for e in events[:-1]]
one = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
r = post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "n": 3})
assert [c["index"] for c in r["choices"]] == [0, 1, 2], r
assert all(c["text"] == one["choices"][0]["text"] and c["finish_reason"] == "length" for c in r["choices"]), (one, r)
assert r["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"] and r["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"], r
# sampled: reproducible with a seed; choice 0 is the n = 1 request's
body = {"prompt": "Once", "max_tokens": 16, "temperature": 1, "seed": 11}
s1 = post("/v1/completions", body)
s4 = post("/v1/completions", dict(body, n=4))
s4b = post("/v1/completions", dict(body, n=4))
assert [c["index"] for c in s4["choices"]] == [0, 1, 2, 3] and all(c["text"] for c in s4["choices"]), s4
if SERVER:
    assert [c["text"] for c in s4["choices"]] == [c["text"] for c in s4b["choices"]], (s4, s4b)
    assert s4["choices"][0]["text"] == s1["choices"][0]["text"], (s1, s4)
    assert len(set(c["text"] for c in s4["choices"])) > 1, s4
# streamed completions
chunks = post("/v1/completions", dict(body, n=4, stream=True, stream_options={"include_usage": True}), stream=True)
texts, fins = {}, {}
for c in chunks:
    for ch in c["choices"]:
        texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
        if ch["finish_reason"]:
            assert ch["index"] not in fins, "two finish reasons for one choice"
            fins[ch["index"]] = ch["finish_reason"]
assert sorted(fins) == [0, 1, 2, 3] and sorted(texts) == [0, 1, 2, 3], (fins, texts)
if SERVER:
    assert texts == {i: s4["choices"][i]["text"] for i in range(4)}, (texts, s4)
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == s4["usage"]["prompt_tokens"], chunks[-1]
if SERVER:
    assert chunks[-1]["usage"]["completion_tokens"] == s4["usage"]["completion_tokens"], chunks[-1]
# chat, streamed, with a stop string and logprobs per choice
body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24, "temperature": 0.8 if SERVER else 0,
        "seed": 2, "n": 3, "stop": ["."]}
if LP:
    body.update(logprobs=True, top_logprobs=2)
plain = post("/v1/chat/completions", body)
assert [c["index"] for c in plain["choices"]] == [0, 1, 2], plain
for c in plain["choices"]:
    assert "." not in c["message"]["content"], c
    if LP:
        toks = "".join(e["token"] for e in c["logprobs"]["content"])
        assert toks.startswith(c["message"]["content"]), (toks, c)
chunks = post("/v1/chat/completions", dict(body, stream=True), stream=True)
texts, roles, fins, lps = {}, {}, {}, {}
for c in chunks:
    for ch in c["choices"]:
        i, d = ch["index"], ch["delta"]
        if "role" in d:
            roles[i] = roles.get(i, 0) + 1
        texts[i] = texts.get(i, "") + (d.get("content") or "")
        if ch.get("logprobs"):
            lps[i] = lps.get(i, []) + [e["token"] for e in ch["logprobs"]["content"]]
        if ch["finish_reason"]:
            fins[i] = ch["finish_reason"]
assert roles == {0: 1, 1: 1, 2: 1}, roles
assert texts == {i: plain["choices"][i]["message"]["content"] for i in range(3)}, (texts, plain)
assert fins == {i: plain["choices"][i]["finish_reason"] for i in range(3)}, (fins, plain)
if LP:
    assert lps == {i: [e["token"] for e in plain["choices"][i]["logprobs"]["content"]] for i in range(3)}, lps
# n out of range
for n in (0, 17):
    try:
        post("/v1/completions", {"prompt": "x", "n": n})
        raise AssertionError("n = %d accepted" % n)
    except urllib.error.HTTPError as e:
        assert e.code == 400 and json.loads(e.read())["error"]["param"] == "n", e
print("n ok")
PY

# ---- the server: two sessions, so n = 3 and n = 4 have choices waiting in the queue ----
es_serve_start "$tmp/s1" --max-sessions 2
[ -n "$hport" ] || { bad "serve did not start: $(head -c 400 "$tmp/s1")"; es_test_finish test_http_n; exit; }
python3 "$tmp/n.py" "$hport" server >"$tmp/n1.out" 2>&1 && ok || bad "server n: $(tail -c 1500 "$tmp/n1.out")"
[ "$(curl -s "http://127.0.0.1:$hport/metrics" | awk '$1 == "edgespec_queued_requests" { print $2 }')" = 0 ] && ok || bad "requests left in the queue"

# ---- the edge-local API: one worker, so every second choice waits ----
"$bin" edge -d "$draft" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 --parallel 1 -t 1 >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
if [ -n "$lport" ]; then
  python3 "$tmp/n.py" "$lport" >"$tmp/n2.out" 2>&1 && ok || bad "edge n: $(tail -c 1500 "$tmp/n2.out") $(tail -c 500 "$tmp/edge.err")"
  # a named seed gives the same sampled text on the edge-local API as on the server's (n = 1 and
  # every choice of n = 3), though the edge's drafts decide how many tokens each round accepts
  python3 - "$hport" "$lport" >"$tmp/seed.out" 2>&1 <<'PY' && ok || bad "seeded text differs between the APIs: $(tail -c 1200 "$tmp/seed.out")"
import json, sys, urllib.request
def post(port, body):
    req = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % port, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=300).read())
for seed in (1, 7, 123456789):
    for n in (1, 3):
        body = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.0, "seed": seed, "n": n}
        a = [c["text"] for c in post(sys.argv[1], body)["choices"]]
        b = [c["text"] for c in post(sys.argv[2], body)["choices"]]
        assert a == b, (seed, n, a, b)
        print(seed, n, a)
PY
else
  bad "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"
fi
kill -TERM "$epid"; wait "$epid" 2>/dev/null
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s1")"
es_test_finish test_http_n
