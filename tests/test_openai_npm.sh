#!/usr/bin/env bash
# test_openai_npm.sh — the official `openai` npm package (installed from the npm registry into a
# throw-away folder) talks to `edgespec serve --http-port` and to `edgespec edge --listen`:
# completion, chat, streaming chat with usage, token counts, an authentication error
# (openai.AuthenticationError) and a bad request (openai.BadRequestError); greedy results equal
# `edgespec run` on the target for the same prompt text.
#
# Needs node, npm and the npm registry. Without them the test FAILS (it does not skip): the API's
# compatibility with the real client is what it checks.
set -u
bin=${ES_BIN:-build/edgespec}
models=${ES_TEST_MODELS:-build/models}
tmp=${ES_BUILD:-build}/tmp/openai-npm
mkdir -p "$tmp"
tmp=$(cd "$tmp" && pwd)
target=$models/stories260K.gguf
draft=$models/draft-mid.gguf
fail() { echo "test_openai_npm: FAIL: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed (scripts/install-deps.sh installs nodejs)"
command -v npm >/dev/null || fail "npm is not installed (scripts/install-deps.sh installs npm)"

work=$(mktemp -d "${TMPDIR:-/tmp}/edgespec-openai-npm.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# ---- the client library, from the registry ----
( cd "$work" && npm init -y >/dev/null 2>&1 &&
  timeout 180 npm install --no-audit --no-fund --loglevel=error --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000 openai >"$work/npm.log" 2>&1 ) ||
  fail "cannot install the 'openai' package from the npm registry ($(npm config get registry 2>/dev/null)); is it reachable? $(tail -c 400 "$work/npm.log")"
[ -f "$work/node_modules/openai/package.json" ] || fail "npm install did not produce node_modules/openai"

# port_of LOG PID: waits for "HTTP API listening on http://HOST:PORT" and prints PORT
port_of() {
  local p=
  for _ in $(seq 1 300); do
    p=$(sed -n 's|^HTTP API listening on http://.*:\([0-9][0-9]*\)$|\1|p' "$1" | head -n 1)
    [ -n "$p" ] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "$p"
}

KEY=npm-test-key
EDGE_KEY=edge-local-key
"$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --api-key "$KEY" --model-name stories >"$tmp/serve.out" 2>"$tmp/serve.err" &
spid=$!
pids+=("$spid")
sport=$(port_of "$tmp/serve.err" "$spid")
[ -n "$sport" ] || fail "serve did not start: $(head -c 400 "$tmp/serve.err")"
eport=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/serve.err" | head -n 1)
for _ in $(seq 1 100); do
  [ -n "$eport" ] && break
  sleep 0.05
  eport=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/serve.err" | head -n 1)
done
[ -n "$eport" ] || fail "serve did not announce its edge port"
"$bin" edge -d "$draft" --server "127.0.0.1:$eport" --api-key "$KEY" --listen 127.0.0.1:0 --parallel 2 -t 1 \
  --http-api-key "$EDGE_KEY" >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(port_of "$tmp/edge.err" "$epid")
[ -n "$lport" ] || fail "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"

# ---- references: the target alone ----
prompt="Once upon a time"
chat_text=$(printf 'user: Tell me about the cat.\nassistant:') # the fallback chat template of stories260K
"$bin" run -m "$target" -p "$prompt" -n 40 -t 1 --temp 0 --json >"$tmp/ref_completion.json" 2>/dev/null || fail "edgespec run failed"
"$bin" run -m "$target" -p "$chat_text" -n 40 -t 1 --temp 0 --json >"$tmp/ref_chat.json" 2>/dev/null || fail "edgespec run failed"

cat >"$work/check.mjs" <<'EOF'
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [serverUrl, serverKey, edgeUrl, edgeKey, refCompletion, refChat] = process.argv.slice(2);
const refC = JSON.parse(readFileSync(refCompletion, "utf8"));
const refH = JSON.parse(readFileSync(refChat, "utf8"));
let passed = 0, failed = 0;
function check(cond, what) {
  if (cond) passed++;
  else { failed++; console.error("FAIL:", what); }
}

async function suite(name, baseURL, apiKey, model) {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === model, `${name}: models.list -> ${JSON.stringify(models.data)}`);

  const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 40, temperature: 0 });
  check(c.object === "text_completion", `${name}: completion object ${c.object}`);
  check(c.choices[0].text === refC.text, `${name}: completion text ${JSON.stringify(c.choices[0].text)} != run ${JSON.stringify(refC.text)}`);
  check(c.choices[0].finish_reason === "length", `${name}: completion finish_reason ${c.choices[0].finish_reason}`);
  check(c.usage.prompt_tokens === refC.n_prompt && c.usage.completion_tokens === refC.n_generated &&
        c.usage.total_tokens === refC.n_prompt + refC.n_generated, `${name}: completion usage ${JSON.stringify(c.usage)}`);

  const messages = [{ role: "user", content: "Tell me about the cat." }];
  const h = await client.chat.completions.create({ model, messages, max_tokens: 40, temperature: 0 });
  check(h.object === "chat.completion", `${name}: chat object ${h.object}`);
  check(h.choices[0].message.role === "assistant", `${name}: chat role`);
  check(h.choices[0].message.content === refH.text, `${name}: chat text ${JSON.stringify(h.choices[0].message.content)} != run ${JSON.stringify(refH.text)}`);
  check(h.usage.prompt_tokens === refH.n_prompt && h.usage.completion_tokens === refH.n_generated, `${name}: chat usage ${JSON.stringify(h.usage)}`);

  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = "", chunks = 0, usage = null, finish = null, role = null;
  for await (const chunk of stream) {
    chunks++;
    check(chunk.object === "chat.completion.chunk", `${name}: chunk object ${chunk.object}`);
    if (chunk.usage) usage = chunk.usage;
    const ch = chunk.choices[0];
    if (!ch) continue;
    if (ch.delta.role) role = ch.delta.role;
    if (ch.delta.content) text += ch.delta.content;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  check(chunks > 3, `${name}: only ${chunks} stream chunks`);
  check(role === "assistant", `${name}: streamed role ${role}`);
  check(text === refH.text, `${name}: streamed chat ${JSON.stringify(text)} != run ${JSON.stringify(refH.text)}`);
  check(finish === "length", `${name}: streamed finish_reason ${finish}`);
  check(usage && usage.prompt_tokens === refH.n_prompt && usage.completion_tokens === refH.n_generated,
        `${name}: streamed usage ${JSON.stringify(usage)}`);

  // sampling works and reports sane usage (its text is the target's distribution, not comparable)
  const s = await client.completions.create({ model, prompt: "The dog", max_tokens: 12, temperature: 0.8, top_p: 0.9, seed: 7 });
  check(s.usage.completion_tokens >= 1 && s.usage.completion_tokens <= 12, `${name}: sampled usage ${JSON.stringify(s.usage)}`);

  // errors surface as the library's typed errors
  const bad = new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 });
  try {
    await bad.completions.create({ model, prompt: "x", max_tokens: 4 });
    check(false, `${name}: a wrong key was accepted`);
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError && e.status === 401, `${name}: wrong key -> ${e && e.constructor.name} ${e && e.status}`);
  }
  try {
    await client.chat.completions.create({ model, messages, max_tokens: -3 });
    check(false, `${name}: negative max_tokens was accepted`);
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && /max_tokens/.test(e.message),
          `${name}: negative max_tokens -> ${e && e.constructor.name} ${e && e.status} ${e && e.message}`);
  }
}

try {
  await suite("server", serverUrl, serverKey, "stories");
  await suite("edge", edgeUrl, edgeKey, "edgespec-edge");
} catch (e) {
  failed++;
  console.error("FAIL: unexpected error:", e);
}
console.log(`test_openai_npm: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
EOF

( cd "$work" && timeout 120 node check.mjs "http://127.0.0.1:$sport/v1" "$KEY" "http://127.0.0.1:$lport/v1" "$EDGE_KEY" \
    "$tmp/ref_completion.json" "$tmp/ref_chat.json" ) 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- serve log" >&2; tail -c 600 "$tmp/serve.err" >&2
  echo "--- edge log" >&2; tail -c 600 "$tmp/edge.err" >&2
fi
exit "$rc"
