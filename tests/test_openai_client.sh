#!/usr/bin/env bash
# test_openai_client.sh — the official `openai` Python client (build/venv, pinned in
# scripts/requirements-test.txt) talks to `edgespec serve --http-port` and to `edgespec edge --listen`:
# models, completion, chat, both streams with usage, sampling, logprobs, JSON mode, tool calls, and the
# client's error classes; greedy
# results equal `edgespec run` on the target for the same prompt text (tests/openai_client.py).
#
# Needs the venv that scripts/install-deps.sh makes. Without it the test FAILS (it does not skip): the
# API's compatibility with the real client is what it checks.
. "$(dirname "$0")/lib.sh"
es_test_init openai-client
py=$(es_venv_python) || exit 1
target=$models/stories260K.gguf
draft=$models/draft-mid.gguf
fail() { echo "test_openai_client: FAIL: $*" >&2; exit 1; }
"$py" -c 'import openai' 2>/dev/null || fail "the venv $ES_VENV lacks the openai package (run scripts/install-deps.sh)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

KEY=client-test-key
EDGE_KEY=edge-local-key
"$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --api-key "$KEY" --model-name stories >"$tmp/serve.out" 2>"$tmp/serve.err" &
spid=$!
pids+=("$spid")
sport=$(wait_line "$tmp/serve.err" "$spid" "$ES_RE_HTTP")
[ -n "$sport" ] || fail "serve did not start: $(head -c 400 "$tmp/serve.err")"
eport=$(wait_line "$tmp/serve.err" "$spid" "$ES_RE_LISTEN")
[ -n "$eport" ] || fail "serve did not announce its edge port"
"$bin" edge -d "$draft" --server "127.0.0.1:$eport" --api-key "$KEY" --listen 127.0.0.1:0 --parallel 2 -t 1 \
  --http-api-key "$EDGE_KEY" >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
[ -n "$lport" ] || fail "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"
# tool calls want a chat template that takes tools: a second pair with the compact one
tmpl="$(dirname "$0")/data/tools-compact.jinja"
"$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --api-key "$KEY" --model-name stories --chat-template-file "$tmpl" \
  >"$tmp/tserve.out" 2>"$tmp/tserve.err" &
pids+=("$!")
tsport=$(wait_line "$tmp/tserve.err" "$!" "$ES_RE_HTTP")
teport=$(wait_line "$tmp/tserve.err" "$!" "$ES_RE_LISTEN")
[ -n "$tsport" ] && [ -n "$teport" ] || fail "serve with the tools template did not start: $(head -c 400 "$tmp/tserve.err")"
"$bin" edge -d "$draft" --server "127.0.0.1:$teport" --api-key "$KEY" --listen 127.0.0.1:0 --parallel 1 -t 1 \
  --http-api-key "$EDGE_KEY" --chat-template-file "$tmpl" >"$tmp/tedge.out" 2>"$tmp/tedge.err" &
pids+=("$!")
tlport=$(wait_line "$tmp/tedge.err" "$!" "$ES_RE_HTTP")
[ -n "$tlport" ] || fail "edge with the tools template did not start: $(head -c 400 "$tmp/tedge.err")"

# ---- references: the target alone ----
chat_text=$(printf 'user: Tell me about the cat.\nassistant:') # the fallback chat template of stories260K
"$bin" run -m "$target" -p "Once upon a time" -n 40 -t 1 --temp 0 --json >"$tmp/ref_completion.json" 2>/dev/null || fail "edgespec run failed"
"$bin" run -m "$target" -p "$chat_text" -n 40 -t 1 --temp 0 --json >"$tmp/ref_chat.json" 2>/dev/null || fail "edgespec run failed"

"$py" "$(dirname "$0")/openai_client.py" "http://127.0.0.1:$sport/v1" "$KEY" "http://127.0.0.1:$lport/v1" "$EDGE_KEY" \
  "$tmp/ref_completion.json" "$tmp/ref_chat.json" "http://127.0.0.1:$tsport/v1" "http://127.0.0.1:$tlport/v1"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- serve log" >&2; tail -c 600 "$tmp/serve.err" >&2
  echo "--- edge log" >&2; tail -c 600 "$tmp/edge.err" >&2
fi
exit "$rc"
