#!/usr/bin/env bash
# test_api_defects.sh — the OpenAI API and the edge-local API as users met them (issue 20's defects):
#  - `run --json` / `edge --json` print valid UTF-8 when generation ends inside a character;
#  - CLI: `edge -d FILE` names itself, `serve --port P --http-port P` fails before "listening", the
#    help texts show the real tree defaults and the K-quants, --chat-template-file;
#  - fields: top_k -1, NUL in a prompt (400 on both ports), tool_choice, and repetition, presence and
#    frequency penalties and logit bias honoured exactly: greedy with a penalty equals `edgespec run --repeat-penalty` through
#    the server (autoregressive and server-side speculation), the edge-local API and `edgespec edge`;
#    a logit bias gives the same text on every path and changes it;
#  - a stop string stops the generator: edgespec_generated_tokens_total rises by the tokens returned;
#  - the edge-local API with its server down: /health 503, a stream gets 502 with an OpenAI error
#    object (not 200), and after the server comes back the API reconnects by itself (no fixed
#    number of attempts) and serves verified text again;
#  - `edge --fallback local` without a server: one-shot generation starts with the draft alone, the
#    local API starts, serves, and switches to verified generation once the server appears;
#    `edge --json` without a server still prints its JSON object.
# Every wait is for an event (a line, a status), capped by ES_WAIT_CAP_S; nothing sleeps for a time.
. "$(dirname "$0")/lib.sh"
es_test_init api-defects
model=$models/stories260K.gguf
draft=$models/draft-small.gguf
command -v curl >/dev/null || { echo "test_api_defects: curl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test_api_defects: python3 is required" >&2; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

# post PORT PATH JSON [stream]: status line then body (streams: the raw event text) on stdout
cat >"$tmp/post.py" <<'EOF'
import http.client, json, sys
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
c.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
r = c.getresponse()
try:
    print(r.status, r.getheader("Content-Type", ""))
    sys.stdout.write(r.read().decode("utf-8"))
except BrokenPipeError:  # the caller read only the status line
    pass
EOF
post() { python3 "$tmp/post.py" "$@"; }
# text PORT JSON: the completion's text (exits non-zero on anything but 200)
text() {
  post "$1" /v1/completions "$2" | python3 -c '
import json, sys
st = sys.stdin.readline().split()[0]
body = sys.stdin.read()
if st != "200": sys.exit("status %s: %s" % (st, body[:300]))
print(json.loads(body)["choices"][0]["text"], end="")'
}
status() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
same() { # NAME GOT WANT
  if [ "$2" = "$3" ]; then ok; else bad "$1: got '$(printf %s "$2" | head -c 200)' want '$(printf %s "$3" | head -c 200)'"; fi
}
# start_serve LOG PORT ARGS...: a server on PORT (edges) and an ephemeral HTTP port ($hport); $spid
start_serve() {
  local log=$1 p=$2; shift 2
  "$bin" serve -m "$model" --port "$p" --http-port 0 -t 1 "$@" >"$log.out" 2>"$log" &
  spid=$!
  pids+=("$spid")
  hport=$(wait_line "$log" "$spid" "$ES_RE_HTTP")
  [ -n "$(wait_line "$log" "$spid" "$ES_RE_LISTEN")" ] && [ -n "$hport" ] || { bad "serve did not start: $(head -c 400 "$log")"; return 1; }
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do [ "$(status "$hport" /health)" = 200 ] && return 0; sleep 0.05; done
  bad "serve never became ready"
  return 1
}
# start_edge LOG SERVER_PORT ARGS...: the edge-local API ($lport, $epid)
start_edge() {
  local log=$1 p=$2; shift 2
  "$bin" edge -d "$draft" --server "127.0.0.1:$p" --listen 127.0.0.1:0 --parallel 1 -t 1 "$@" >"$log.out" 2>"$log" &
  epid=$!
  pids+=("$epid")
  lport=$(wait_line "$log" "$epid" "$ES_RE_HTTP")
  [ -n "$lport" ] || { bad "edge --listen did not start: $(head -c 400 "$log")"; return 1; }
}
# wait_status PORT PATH CODE: until PATH answers CODE (capped)
wait_status() {
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do [ "$(status "$1" "$2")" = "$3" ] && return 0; sleep 0.05; done
  bad "$1$2 never answered $3 (last $(status "$1" "$2"))"
  return 1
}
stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
P="Once upon a time"

# ---- 8: --json output is valid UTF-8 when the generation ends inside a character ----
# A logit bias makes the model emit the byte token <0xE6> (id 3 + 0xE6 in this vocabulary), the lead
# byte of a 3-byte character, and nothing after it: the text must stay valid (held back -> U+FFFD).
for n in 1 2 3; do
  "$bin" run -m "$model" -p "日本語" -n "$n" --logit-bias 233=100 --json >"$tmp/u.json" 2>"$tmp/u.err" || { bad "run --logit-bias failed: $(head -c 300 "$tmp/u.err")"; continue; }
  python3 -c '
import json, sys
d = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
assert d["tokens"][-1] == 233, d["tokens"]
assert d["text"].endswith("\ufffd"), repr(d["text"])' "$tmp/u.json" && ok || bad "run --json -n $n ending inside a character: $(head -c 300 "$tmp/u.json")"
done
# and with sampling over a CJK prompt: every output parses
for seed in $(seq 1 10); do
  "$bin" run -m "$model" -p "日本語の猫 😀" -n 6 --temp 1.5 --seed "$seed" --logit-bias 233=4 --logit-bias 154=4 --json >"$tmp/u.json" 2>/dev/null
  python3 -c 'import json, sys; json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))' "$tmp/u.json" && ok || bad "run --json seed $seed is not valid UTF-8 JSON"
done

# ---- 7: command-line details ----
expect 1 "$bin" edge -d README.md -p hi
has "$tmp/err" "edgespec edge:"
if grep -q "edgespec run" "$tmp/err"; then bad "edge -d FILE reports itself as run: $(cat "$tmp/err")"; else ok; fi
sp=$(free_port)
expect 2 "$bin" serve -m "$model" --port "$sp" --http-port "$sp"
if grep -q "listening" "$tmp/err"; then bad "serve printed listening before failing: $(cat "$tmp/err")"; else ok; fi
has "$tmp/err" "must differ"
expect 0 "$bin" --help
has "$tmp/out" "q4_k"
has "$tmp/out" "q4_k_m"
# the drafter's defaults (es_drafter_default_params: tree budget 8, depth 8, width 4)
expect 0 "$bin" run --help-spec
has "$tmp/out" "most nodes (default 8)"
has "$tmp/out" "most levels (default 8)"
has "$tmp/out" "per node (default 4)"
expect 0 "$bin" edge --help
has "$tmp/out" "tree drafting (8, 8, 4)"
printf '{%% for m in messages %%}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%% endfor %%}' >"$tmp/chatml.jinja"
printf '{%% if %%}{{ messages }}' >"$tmp/unknown.jinja" # not Jinja this parser takes, nor a known family
expect 2 "$bin" serve -m "$model" --chat-template-file "$tmp/unknown.jinja"
has "$tmp/err" "not a template of a known family"
expect 2 "$bin" serve -m "$model" --chat-template-file "$tmp/missing.jinja"
has "$tmp/err" "cannot read"

# ---- the server's API: fields, penalty, bias, stop strings ----
eport=$(free_port)
start_serve "$tmp/serve" "$eport" || { es_test_finish test_api_defects; exit 1; }
h=$hport
# top_k -1 is "off"
r=$(post "$h" /v1/completions '{"prompt":"Once","max_tokens":3,"top_k":-1,"temperature":0}' | head -n 1)
same "top_k -1" "${r%% *}" 200
# NUL: refused, not cut
post "$h" /v1/completions '{"prompt":"Once\u0000 upon","max_tokens":3}' >"$tmp/nul.txt"
same "NUL status" "$(head -n 1 "$tmp/nul.txt" | cut -d' ' -f1)" 400
has "$tmp/nul.txt" "NUL"
# tool_choice: none / auto are plain text, a call is refused
r=$(post "$h" /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"tool_choice":"none"}' | head -n 1)
same "tool_choice none" "${r%% *}" 200
post "$h" /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"tool_choice":"required"}' >"$tmp/tc.txt"
same "tool_choice required" "$(head -n 1 "$tmp/tc.txt" | cut -d' ' -f1)" 400
has "$tmp/tc.txt" "tool_choice"
post "$h" /v1/completions '{"prompt":"Once","max_tokens":2,"logit_bias":{"999999":5}}' >"$tmp/lb.txt"
same "logit_bias outside the vocabulary" "$(head -n 1 "$tmp/lb.txt" | cut -d' ' -f1)" 400

# routes without /v1 (llama.cpp, vLLM), /tokenize and /detokenize
same "no /v1: completions" "$(text "$h" '{"prompt":"Once","max_tokens":5,"temperature":0}')" \
  "$(post "$h" /completions '{"prompt":"Once","max_tokens":5,"temperature":0}' | tail -n +2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"], end="")')"
same "no /v1: chat" "$(post "$h" /chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}' | head -n 1 | cut -d' ' -f1)" 200
same "no /v1: models" "$(status "$h" /models)" 200
post "$h" /tokenize "{\"content\":\"$P\"}" >"$tmp/tok.txt"
toks=$(tail -n +2 "$tmp/tok.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
run_toks=$("$bin" run -m "$model" -p "$P" -n 1 --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt_tokens"])')
same "/tokenize = the prompt's ids" "$toks" "$run_toks"
toks_nobos=$(post "$h" /v1/tokenize "{\"content\":\"$P\",\"add_special\":false}" | tail -n +2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
same "/tokenize add_special false" "$toks_nobos" "[${run_toks#\[1, }"
same "/detokenize" "$(post "$h" /detokenize "{\"tokens\":$toks}" | tail -n +2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["content"], end="")')" "$P"
same "/detokenize outside the vocabulary" "$(post "$h" /detokenize '{"tokens":[1,99999]}' | head -n 1 | cut -d' ' -f1)" 400
same "/detokenize without tokens" "$(post "$h" /detokenize '{"content":"x"}' | head -n 1 | cut -d' ' -f1)" 400
same "/tokenize with NUL" "$(post "$h" /tokenize '{"content":"a\u0000b"}' | head -n 1 | cut -d' ' -f1)" 400
same "GET /tokenize" "$(status "$h" /tokenize)" 405

# repetition penalty: exactly `edgespec run --repeat-penalty` (which accepts the prompt into its window)
ref_plain=$("$bin" run -m "$model" -p "$P" -n 60 2>/dev/null)
for rp in 1.3 2.0; do
  ref=$("$bin" run -m "$model" -p "$P" -n 60 --repeat-penalty "$rp" --repeat-last-n 16 2>/dev/null)
  [ "$ref" != "$ref_plain" ] && ok || bad "penalty $rp does not change the reference: the test would prove nothing"
  got=$(text "$h" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"repeat_penalty\":$rp,\"repeat_last_n\":16}")
  same "server AR, repeat_penalty $rp" "$got" "$ref"
  got=$(text "$h" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"repetition_penalty\":$rp,\"repeat_last_n\":16}")
  same "server AR, repetition_penalty $rp" "$got" "$ref"
  # the speculative paths in one process (chain and tree): the verifier walks the penalty along the path
  for spec in chain tree; do
    got=$("$bin" run -m "$model" --draft "$draft" --spec "$spec" -p "$P" -n 60 --repeat-penalty "$rp" --repeat-last-n 16 2>/dev/null)
    same "run --draft --spec $spec, penalty $rp" "$got" "$ref"
  done
done
ref13=$("$bin" run -m "$model" -p "$P" -n 60 --repeat-penalty 1.3 --repeat-last-n 16 2>/dev/null)
# presence / frequency penalties (llama.cpp's rule, same window): the same exactness
pf=(--presence-penalty 0.4 --frequency-penalty 0.3 --repeat-last-n 32)
ref_pf=$("$bin" run -m "$model" -p "$P" -n 60 "${pf[@]}" 2>/dev/null)
[ "$ref_pf" != "$ref_plain" ] && ok || bad "presence/frequency penalties change nothing: the test would prove nothing"
pf_req="{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"presence_penalty\":0.4,\"frequency_penalty\":0.3,\"repeat_last_n\":32}"
same "server AR, presence/frequency" "$(text "$h" "$pf_req")" "$ref_pf"
same "run --draft --spec tree, presence/frequency" "$("$bin" run -m "$model" --draft "$draft" --spec tree -p "$P" -n 60 "${pf[@]}" 2>/dev/null)" "$ref_pf"

# logit bias: the greedy text's first token banned changes the text; every path agrees (below)
bias='{"410":-100,"261":-100,"383":3.5}'
bias_req="{\"prompt\":\"$P\",\"max_tokens\":40,\"temperature\":0,\"logit_bias\":$bias}"
bias_ar=$(text "$h" "$bias_req")
plain40=$(text "$h" "{\"prompt\":\"$P\",\"max_tokens\":40,\"temperature\":0}")
[ -n "$bias_ar" ] && [ "$bias_ar" != "$plain40" ] && ok || bad "logit_bias changed nothing: '$bias_ar'"
bias_run=$("$bin" run -m "$model" -p "$P" -n 40 --logit-bias 410=-100 --logit-bias 261=-100 --logit-bias 383=3.5 2>/dev/null)
same "server AR, logit_bias = run --logit-bias" "$bias_ar" "$bias_run"
for spec in chain tree; do
  same "run --draft --spec $spec --logit-bias" "$("$bin" run -m "$model" --draft "$draft" --spec "$spec" -p "$P" -n 40 --logit-bias 410=-100 --logit-bias 261=-100 --logit-bias 383=3.5 2>/dev/null)" "$bias_run"
done

# stop strings stop the generator: the counter rises by the tokens the reply used, not more
g0=$(metric "$h" edgespec_generated_tokens_total)
post "$h" /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"stop\":[\". \"]}" >"$tmp/stop.txt"
n=$(python3 -c 'import json,sys; f=open(sys.argv[1]); f.readline(); d=json.load(f); print(d["usage"]["completion_tokens"], d["choices"][0]["finish_reason"])' "$tmp/stop.txt")
g1=$(metric "$h" edgespec_generated_tokens_total)
same "stop string: finish" "${n#* }" stop
same "stop string: generated tokens (counter $g0 -> $g1)" "$((g1 - g0))" "${n%% *}"
[ "${n%% *}" -lt 60 ] && ok || bad "the stop string did not end the generation early ($n)"
# streaming too
g0=$g1
post "$h" /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"stop\":[\". \"],\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/stops.txt"
n=$(python3 -c '
import json, sys
u = None
for line in open(sys.argv[1]):
    if line.startswith("data: {"):
        d = json.loads(line[6:])
        if d.get("usage"): u = d["usage"]["completion_tokens"]
print(u)' "$tmp/stops.txt")
g1=$(metric "$h" edgespec_generated_tokens_total)
same "stop string, streamed: generated tokens" "$((g1 - g0))" "$n"

# ---- the edge-local API against this server ----
start_edge "$tmp/edge" "$eport" --reconnect 1 || { es_test_finish test_api_defects; exit 1; }
l=$lport
same "edge /health with the server up" "$(status "$l" /health)" 200
same "edge /tokenize (the draft's tokenizer, the same vocabulary)" "$(post "$l" /tokenize "{\"content\":\"$P\"}" | tail -n +2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')" "$run_toks"
got=$(text "$l" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"repeat_penalty\":1.3,\"repeat_last_n\":16}")
same "edge-local API, repeat_penalty" "$got" "$ref13"
same "edge-local API, logit_bias" "$(text "$l" "$bias_req")" "$bias_ar"
same "edge-local API, presence/frequency" "$(text "$l" "$pf_req")" "$ref_pf"
g0=$(metric "$l" edgespec_generated_tokens_total)
post "$l" /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"stop\":[\". \"]}" >"$tmp/estop.txt"
n=$(python3 -c 'import json,sys; f=open(sys.argv[1]); f.readline(); print(json.load(f)["usage"]["completion_tokens"])' "$tmp/estop.txt")
g1=$(metric "$l" edgespec_generated_tokens_total)
# an edge round confirms a whole verdict at once: the tokens after the stop string in that verdict
# were generated by the same pass, but no further round runs
[ $((g1 - g0)) -ge "$n" ] && [ $((g1 - g0)) -le $((n + 8)) ] && ok || bad "edge stop string: generated $((g1 - g0)) for $n returned"
[ "$n" -lt 60 ] && ok || bad "edge stop string did not end early ($n)"
expect 0 "$bin" edge -d "$draft" --server "127.0.0.1:$eport" -p "$P" -n 60 --repeat-penalty 1.3 --repeat-last-n 16 -t 1
same "edge CLI, --repeat-penalty" "$(cat "$tmp/out")" "$ref13"
# ---- 2, 3: the server goes away: /health follows the upstream, a request gets 502 with an OpenAI error
# object (a stream too, instead of 200 with the error inside the event stream) ----
stop_pid "$spid"
wait_status "$l" /health 503
same "edgespec_ready with the server down" "$(metric "$l" edgespec_ready)" 0
curl -s "http://127.0.0.1:$l/health" >"$tmp/health.json"
has "$tmp/health.json" "unreachable"
# (this request also uses up the worker's --reconnect attempts: defect 1 below)
post "$l" /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":8}" >"$tmp/p502.txt"
same "plain, server down: status" "$(head -n 1 "$tmp/p502.txt" | cut -d' ' -f1)" 502
post "$l" /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":8,\"stream\":true}" >"$tmp/s502.txt"
same "stream, server down: status" "$(head -n 1 "$tmp/s502.txt" | cut -d' ' -f1)" 502
python3 -c '
import json, sys
f = open(sys.argv[1]); f.readline()
e = json.load(f)["error"]
assert e["message"] and e["type"]' "$tmp/s502.txt" && ok || bad "stream, server down: not an OpenAI error object: $(head -c 300 "$tmp/s502.txt")"
post "$l" /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}' >"$tmp/c502.txt"
same "chat stream, server down: status" "$(head -n 1 "$tmp/c502.txt" | cut -d' ' -f1)" 502
post "$l" /v1/completions '{"prompt":"Once\u0000 upon","max_tokens":3}' >"$tmp/enul.txt"
same "edge NUL status" "$(head -n 1 "$tmp/enul.txt" | cut -d' ' -f1)" 400

# ---- 1: the server comes back (with server-side speculation now): the edge, whose worker used up its
# --reconnect attempts above, reconnects by itself and serves verified text again ----
start_serve "$tmp/serve2" "$eport" --draft "$draft" || { es_test_finish test_api_defects; exit 1; }
h=$hport
wait_status "$l" /health 200
same "edgespec_ready with the server back" "$(metric "$l" edgespec_ready)" 1
same "edge after the server's restart" "$(text "$l" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0}")" "$ref_plain"
# server-side speculation with the penalty and the bias
same "server-spec, repeat_penalty" "$(text "$h" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0,\"repeat_penalty\":1.3,\"repeat_last_n\":16}")" "$ref13"
same "server-spec, logit_bias" "$(text "$h" "$bias_req")" "$bias_ar"
same "server-spec, presence/frequency" "$(text "$h" "$pf_req")" "$ref_pf"
stop_pid "$spid"
stop_pid "$epid"

# ---- 6: --fallback local without a server ----
ref_draft=$("$bin" run -m "$draft" -p "$P" -n 30 2>/dev/null)
expect 0 "$bin" edge -d "$draft" --server "127.0.0.1:$eport" -p "$P" -n 30 -t 1 --fallback local --json
python3 -c '
import json, sys
d = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
assert d["fallback_tokens"] == d["n_generated"] == 30, d
print(d["text"], end="")' "$tmp/out" >"$tmp/fb.txt" && ok || bad "edge --fallback local --json: $(head -c 300 "$tmp/out")"
same "edge --fallback local without a server" "$(cat "$tmp/fb.txt")" "$ref_draft"
expect 1 "$bin" edge -d "$draft" --server "127.0.0.1:$eport" -p "$P" -n 30 -t 1 --json
python3 -c '
import json, sys
d = json.loads(open(sys.argv[1]).read())
assert d["tokens"] == [] and d["error"] and d["stop"] == "error", d' "$tmp/out" && ok || bad "failing edge --json: $(head -c 300 "$tmp/out")"
start_edge "$tmp/edgefb" "$eport" --fallback local || { es_test_finish test_api_defects; exit 1; }
l=$lport
same "fallback edge /health without a server" "$(status "$l" /health)" 200
curl -s "http://127.0.0.1:$l/health" >"$tmp/health.json"
has "$tmp/health.json" "draft model alone"
same "fallback edge answers with the draft" "$(text "$l" "{\"prompt\":\"$P\",\"max_tokens\":30,\"temperature\":0}")" "$ref_draft"
start_serve "$tmp/serve3" "$eport" || { es_test_finish test_api_defects; exit 1; }
for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do grep -q "upstream\":\"connected" <(curl -s "http://127.0.0.1:$l/health") && break; sleep 0.05; done
curl -s "http://127.0.0.1:$l/health" >"$tmp/health.json"
has "$tmp/health.json" '"upstream":"connected"'
same "fallback edge, verified once the server appeared" "$(text "$l" "{\"prompt\":\"$P\",\"max_tokens\":60,\"temperature\":0}")" "$ref_plain"
stop_pid "$epid"
stop_pid "$spid"

es_test_finish test_api_defects
