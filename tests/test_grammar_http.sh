#!/usr/bin/env bash
# test_grammar_http.sh — response_format through the whole server (scheduler sessions):
#  - greedy json_schema replies from server-side speculation (serve --draft: masked drafts, masked
#    verification) are exactly those of autoregressive sessions (serve without a draft) under the
#    same mask, chat and completions, plain and streamed, and parse and validate (nested object,
#    array, enums, integer, boolean, anyOf string|null);
#  - sampled replies (temperature 1, several seeds) validate too, and the same seed repeats;
#  - a schema outside the subset is 400 naming the keyword, on both APIs;
#  - the edge-local API (protocol version 4) gives the AR server's greedy JSON replies.
# The story model is no JSON writer: the schema's only free string is optional and the model may leave
# it out; max_tokens is generous (its documents end by themselves: blank runs are capped per gap).
. "$(dirname "$0")/lib.sh"
es_test_init grammar-http
model=$models/stories260K.gguf
draft=$models/draft-mid.gguf
command -v curl >/dev/null || { echo "test_grammar_http: curl is required" >&2; exit 1; }
es_reap_on_exit

es_serve_start "$tmp/ar"
ar=$hport
es_serve_start "$tmp/spec" --draft "$draft"
sp=$hport
speport=$eport
[ -n "$ar" ] && [ -n "$sp" ] || { bad "serve did not start: $(head -c 300 "$tmp/ar") $(head -c 300 "$tmp/spec")"; es_test_finish test_grammar_http; exit; }
"$bin" edge -d "$draft" --server "127.0.0.1:$speport" --listen 127.0.0.1:0 -t 1 >"$tmp/edge.out" 2>"$tmp/edge.err" &
pids+=("$!")
lport=$(wait_line "$tmp/edge.err" "$!" "$ES_RE_HTTP")

cat >"$tmp/check.py" <<'PY'
import json, sys, urllib.error, urllib.request
ar, sp, edge = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
schema = {"type": "object", "properties": {
    "mood": {"enum": ["happy", "sad", "calm"]}, "count": {"type": "integer"}, "ok": {"type": "boolean"},
    "tags": {"type": "array", "items": {"enum": ["cat", "dog", 7]}, "minItems": 1, "maxItems": 3},
    "friend": {"type": "object", "properties": {"kind": {"enum": ["fox", "owl"]}, "note": {"anyOf": [{"type": "null"}, {"type": "integer"}]}},
               "required": ["kind", "note"], "additionalProperties": False}},
    "required": ["mood", "count", "ok", "tags", "friend"], "additionalProperties": False}
fmt = {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema, "strict": True}}
def valid(d):
    f = d.get("friend")
    return (set(d) == set(schema["properties"]) and d["mood"] in ("happy", "sad", "calm") and type(d["count"]) is int
            and type(d["ok"]) is bool and 1 <= len(d["tags"]) <= 3 and all(t in ("cat", "dog", 7) for t in d["tags"])
            and isinstance(f, dict) and set(f) == {"kind", "note"} and f["kind"] in ("fox", "owl")
            and (f["note"] is None or type(f["note"]) is int))
def post(port, path, body, stream=False):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path), json.dumps(body).encode(), {"Content-Type": "application/json"})
    data = urllib.request.urlopen(req, timeout=300).read().decode()
    if not stream:
        return json.loads(data)
    return [json.loads(l[6:]) for l in data.split("\n") if l.startswith("data: {")]
def text_of(r, kind):
    return r["choices"][0]["message"]["content"] if kind == "chat" else r["choices"][0]["text"]
fails = 0
def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print("FAIL:", what, file=sys.stderr)
bodies = [("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": c}]}) for c in ("Tell me about the cat.", "Hi")]
bodies += [("completion", "/v1/completions", {"prompt": p}) for p in ("Once upon a time", "The dog")]
for kind, path, base in bodies:
    body = dict(base, max_tokens=400, temperature=0, response_format=fmt)
    a, s = post(ar, path, body), post(sp, path, body)
    ta, ts = text_of(a, kind), text_of(s, kind)
    check(ta == ts, f"{kind}: greedy speculation under the mask differs from AR: {ts!r} vs {ta!r}")
    check(a["choices"][0]["finish_reason"] == "stop", f"{kind}: finish_reason {a['choices'][0]['finish_reason']}: {ta!r}")
    try:
        check(valid(json.loads(ta)), f"{kind}: greedy output does not validate: {ta!r}")
    except ValueError:
        check(False, f"{kind}: greedy output does not parse: {ta!r}")
    chunks = post(sp, path, dict(body, stream=True), stream=True)
    st = "".join((c["choices"][0]["delta"].get("content") or "") if kind == "chat" else c["choices"][0]["text"] for c in chunks if c["choices"])
    check(st == ts, f"{kind}: streamed {st!r} != plain {ts!r}")
for seed in (1, 2, 3, 4):
    body = {"messages": [{"role": "user", "content": "Tell me about the cat."}], "max_tokens": 400, "temperature": 1, "seed": seed,
            "response_format": fmt}
    r = post(sp, "/v1/chat/completions", body)
    t = text_of(r, "chat")
    try:
        check(valid(json.loads(t)) and r["choices"][0]["finish_reason"] == "stop", f"seed {seed}: sampled output {t!r}")
    except ValueError:
        check(False, f"seed {seed}: sampled output does not parse: {t!r}")
    check(text_of(post(sp, "/v1/chat/completions", body), "chat") == t, f"seed {seed}: a seeded request does not repeat")
# the speculative server did speculate: drafts were verified and some accepted
met = dict(l.split()[:2] for l in urllib.request.urlopen("http://127.0.0.1:%d/metrics" % sp).read().decode().splitlines()
           if l.startswith(("edgespec_draft_tokens_total ", "edgespec_accepted_tokens_total ")))
check(float(met.get("edgespec_accepted_tokens_total", 0)) > 0, f"server-spec accepted no draft token: {met}")
print("server-spec under the mask: %s drafted, %s accepted" % (met.get("edgespec_draft_tokens_total"), met.get("edgespec_accepted_tokens_total")))
def status(port, path, body):
    try:
        post(port, path, body)
        return 200, ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
code, msg = status(sp, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "response_format": {
    "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 3}}}})
check(code == 400 and "maxLength" in msg and "response_format" in msg, f"unsupported schema: {code} {msg}")
if edge:
    # the edge-local API (protocol version 4: the schema travels in OPEN, the edge drafts under the
    # same mask): greedy, the autoregressive server's reply, chat and completions
    for kind, path, base in bodies[:1] + bodies[2:3]:
        body = dict(base, max_tokens=400, temperature=0, response_format=fmt)
        te, ta = text_of(post(edge, path, body), kind), text_of(post(ar, path, body), kind)
        check(te == ta, f"edge-local {kind}: {te!r} vs the server's {ta!r}")
    code, msg = status(edge, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 3}}}})
    check(code == 400 and "maxLength" in msg, f"edge-local unsupported schema: {code} {msg}")
else:
    check(False, "the edge did not start")
print("test_grammar_http: %d failed" % fails)
sys.exit(1 if fails else 0)
PY
if python3 "$tmp/check.py" "$ar" "$sp" "$lport"; then ok; else bad "check.py failed"; fi
es_test_finish test_grammar_http
