#!/usr/bin/env bash
# test_logprobs.sh — logprobs from verification, against the target alone:
#  - the server's HTTP sessions with server-side speculation (serve --draft DRAFT: several tokens per
#    verification pass, each token's numbers from its own row of the tree) report the same tokens and
#    log-probabilities as autoregressive sessions (serve without a draft);
#  - greedy: each token is the top-1 of its 20 alternatives, its logprob their maximum, every value
#    <= 0, the alternatives sorted and their probabilities summing to <= 1;
#  - with a stop string the entries end with the text (their tokens spell exactly the text returned),
#    plain and streamed;
#  - sampling (temperature 1): the values are the target's, whatever the sampled token;
#  - /metrics edgespec_accepted_depth_total{depth}: acceptance by position, consistent with the totals.
. "$(dirname "$0")/lib.sh"
es_test_init logprobs
model=$models/stories260K.gguf
draft=$models/draft-mid.gguf
command -v curl >/dev/null || { echo "test_logprobs: curl is required" >&2; exit 1; }
es_reap_on_exit

es_serve_start "$tmp/ar"
ar=$hport
arpid=$pid
es_serve_start "$tmp/spec" --draft "$draft"
sp=$hport
[ -n "$ar" ] && [ -n "$sp" ] || { bad "serve did not start: $(head -c 300 "$tmp/ar") $(head -c 300 "$tmp/spec")"; es_test_finish test_logprobs; exit; }

cat >"$tmp/check.py" <<'PY'
import json, math, sys, urllib.request
ar, sp = int(sys.argv[1]), int(sys.argv[2])
def post(port, path, body, stream=False):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), json.dumps(body).encode(), {"Content-Type": "application/json"})
    data = urllib.request.urlopen(req, timeout=300).read().decode()
    if not stream:
        return json.loads(data)
    return [json.loads(l[6:]) for l in data.split("\n") if l.startswith("data: {")]
def greedy_ok(toks, lps, tops, what):
    assert len(toks) == len(lps) == len(tops) and toks, what
    for t, lp, top in zip(toks, lps, tops):
        vals = [v for _, v in top]
        assert top[0][0] == t and abs(top[0][1] - lp) < 1e-6, (what, t, lp, top)
        assert lp <= 0 and all(v <= 0 for v in vals) and vals == sorted(vals, reverse=True), (what, top)
        assert sum(math.exp(v) for v in vals) <= 1 + 1e-5, (what, top)
for prompt in ["Once upon a time", "The little dog", "Lily and Ben"]:
    body = {"prompt": prompt, "max_tokens": 40, "temperature": 0, "logprobs": 20}
    a, s = post(ar, "/v1/completions", body), post(sp, "/v1/completions", body)
    la, ls = a["choices"][0]["logprobs"], s["choices"][0]["logprobs"]
    assert a["choices"][0]["text"] == s["choices"][0]["text"], (a, s)
    assert la["tokens"] == ls["tokens"] and "".join(la["tokens"]) == a["choices"][0]["text"], (la["tokens"], ls["tokens"])
    # the same target rows, computed in a batch of tree rows instead of one at a time: equal up to rounding
    for x, y in zip(la["token_logprobs"], ls["token_logprobs"]):
        assert abs(x - y) < 2e-3, (prompt, la["token_logprobs"], ls["token_logprobs"])
    for lp, name in [(la, "ar"), (ls, "spec")]:
        tops = [sorted(d.items(), key=lambda kv: -kv[1]) for d in lp["top_logprobs"]]
        assert all(len(t) == 20 for t in tops), name
        greedy_ok(lp["tokens"], lp["token_logprobs"], tops, name + " " + prompt)
# a stop string: the entries end where the text ends
for port in (ar, sp):
    body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "logprobs": 1, "stop": ["."]}
    r = post(port, "/v1/completions", body)
    text, lp = r["choices"][0]["text"], r["choices"][0]["logprobs"]
    assert r["choices"][0]["finish_reason"] == "stop" and "." not in text, r
    joined = "".join(lp["tokens"])  # the tokens that made any of the text: the last may hold the stop string
    assert joined == text or (joined.startswith(text) and len(joined) - len(lp["tokens"][-1]) < len(text)), (text, lp["tokens"])
    chunks = post(port, "/v1/completions", dict(body, stream=True), stream=True)
    st = [t for c in chunks for ch in c["choices"] if ch.get("logprobs") for t in ch["logprobs"]["tokens"]]
    assert st == lp["tokens"], (st, lp["tokens"])
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == text
    # chat, streamed, with alternatives
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 30, "temperature": 0, "logprobs": True,
            "top_logprobs": 4, "stop": [","]}
    r = post(port, "/v1/chat/completions", body)
    content = r["choices"][0]["logprobs"]["content"]
    chunks = post(port, "/v1/chat/completions", dict(body, stream=True), stream=True)
    sc = [e for c in chunks for ch in c["choices"] if ch.get("logprobs") for e in ch["logprobs"]["content"]]
    assert [e["token"] for e in sc] == [e["token"] for e in content], (sc, content)
    greedy_ok([e["token"] for e in content], [e["logprob"] for e in content],
              [[(t["token"], t["logprob"]) for t in e["top_logprobs"]] for e in content], "chat")
# sampling: the emitted tokens' values are the target's (<= 0, finite), alternatives still sorted
for port in (ar, sp):
    r = post(port, "/v1/completions", {"prompt": "Once", "max_tokens": 30, "temperature": 1, "seed": 5, "logprobs": 3})
    lp = r["choices"][0]["logprobs"]
    assert all(v <= 0 and math.isfinite(v) for v in lp["token_logprobs"]) and 0 < len(lp["tokens"]) <= r["usage"]["completion_tokens"], lp
    for d, v in zip(lp["top_logprobs"], lp["token_logprobs"]):
        assert len(d) == 3 and max(d.values()) >= v - 1e-6, (d, v)
# per-position acceptance (/metrics of the speculating server): rounds reaching depth k, non-increasing
# in k, summing to the accepted tokens (a path deeper than the last bucket counts there once)
page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % sp, timeout=60).read().decode().splitlines()
val = lambda name: float([l for l in page if l.split(" ")[0] == name][0].split(" ")[1])
depth = [val('edgespec_accepted_depth_total{depth="%d"}' % k) for k in range(1, 17)]
assert depth[0] > 0 and depth == sorted(depth, reverse=True) and depth[0] <= val("edgespec_drafts_total"), depth
assert (sum(depth) == val("edgespec_accepted_tokens_total")) if depth[-1] == 0 else sum(depth) <= val("edgespec_accepted_tokens_total"), depth
print("logprobs ok")
PY
python3 "$tmp/check.py" "$ar" "$sp" >"$tmp/check.out" 2>&1 && ok || bad "$(tail -c 2000 "$tmp/check.out")"
kill -TERM "$arpid" "$pid"; wait "$arpid"; wait "$pid"
es_test_finish test_logprobs
