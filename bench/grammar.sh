#!/usr/bin/env bash
# bench/grammar.sh — what constrained decoding (response_format) costs speculation: `edgespec serve`
# with a server-side draft (server-spec sessions), the same greedy chat requests one after another
# without response_format, with a json_schema (nested object, array, enums) and with json_object;
# per case the acceptance length (tokens per verification round, from /metrics) and tokens/s
# (completion tokens over wall time of the requests). Ratios are what to read: both runs share the
# machine. The tiny story models are no JSON writers: the schema has no free string (their strings
# rarely end) and json_object documents are often cut at max_tokens. No logit bias: the server-side
# draft does not apply the request's, so a bias would be measured instead of the grammar.
# usage: [THREADS=N] bench/grammar.sh [BUILD_DIR] [TARGET.gguf] [DRAFT.gguf] [REQUESTS] [MAX_TOKENS]
# (defaults: build, stories260K + draft-mid, 20 requests per case, 400 tokens, 1 compute thread)
set -euo pipefail
build=${1:-build}
target=${2:-$build/models/stories260K.gguf}
draft=${3:-$build/models/draft-mid.gguf}
reqs=${4:-20}
max_tokens=${5:-400}
tmp=$(mktemp -d)
trap 'kill $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
"$build/edgespec" serve -m "$target" --draft "$draft" --port 0 --http-port 0 -t "${THREADS:-1}" >"$tmp/out" 2>"$tmp/err" &
spid=$!
for _ in $(seq 600); do grep -q "HTTP API ready" "$tmp/err" && break; sleep 0.1; done
port=$(grep -o 'http://127.0.0.1:[0-9]*' "$tmp/err" | head -1 | sed 's/.*://')
python3 - "$port" "$reqs" "$max_tokens" <<'EOF'
import json, sys, time, urllib.request
port, reqs, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
def post(path, body):
    rq = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(rq))
def metrics():
    m = {}
    for line in urllib.request.urlopen(base + "/metrics").read().decode().splitlines():
        if line.startswith(("edgespec_drafts_total", "edgespec_draft_tokens_total", "edgespec_accepted_tokens_total")):
            k, v = line.split()
            m[k] = float(v)
    return m
schema = {"type": "object", "properties": {
    "mood": {"enum": ["happy", "sad"]}, "count": {"type": "integer"}, "ok": {"type": "boolean"},
    "tags": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 3},
    "friend": {"type": "object", "properties": {"kind": {"enum": ["fox", "owl"]}, "age": {"type": "integer"}}, "required": ["kind"]}},
    "required": ["mood", "count", "ok", "tags", "friend"]}
cases = [("no response_format", None), ("json_schema", {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}),
         ("json_object", {"type": "json_object"})]
prompts = ["Tell me about the cat.", "Once upon a time there was a dog.", "Lily went to the park.", "Tom had a red ball."]
print(f"{'case':22} {'tokens':>7} {'rounds':>7} {'tokens/round':>13} {'accepted/drafted':>17} {'tokens/s':>9} {'complete JSON':>13}")
for name, fmt in cases:
    m0, t0, toks, ok = metrics(), time.time(), 0, 0
    for i in range(reqs):
        body = {"messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens": max_tokens, "temperature": 0}
        if fmt: body["response_format"] = fmt
        r = post("/v1/chat/completions", body)
        toks += r["usage"]["completion_tokens"]
        try:
            ok += isinstance(json.loads(r["choices"][0]["message"]["content"]), dict)
        except ValueError:
            pass
    dt, m1 = time.time() - t0, metrics()
    d = {k: m1[k] - m0.get(k, 0) for k in m1}
    rounds = d.get("edgespec_drafts_total", 0)
    print(f"{name:22} {toks:7d} {int(rounds):7d} {toks / max(rounds, 1):13.2f} "
          f"{d.get('edgespec_accepted_tokens_total', 0) / max(d.get('edgespec_draft_tokens_total', 0), 1):17.2f} {toks / dt:9.0f} {ok:6d}/{reqs}")
EOF
