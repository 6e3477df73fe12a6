#!/usr/bin/env bash
# test_http_tools.sh — chat templates from Jinja and tools on /v1/chat/completions, on the tiny models:
#  - a Jinja template given with --chat-template-file renders requests: tools, assistant tool_calls
#    (OpenAI's JSON-text arguments) and tool results in the history are accepted (200);
#  - a template's raise_exception reaches the client as a 400 with its message (Mistral's template
#    refuses a system message), and the server keeps serving;
#  - tool_choice "required" or a named function is enforced by constrained decoding (the grammar of a
#    JSON call naming a requested tool, its arguments under the tool's parameters schema): even the tiny
#    story model then answers with tool_calls and finish_reason "tool_calls", plain and streamed; a
#    name not in tools, or a JSON response_format beside it, is 400; without tools it is a 400 too;
#    malformed tools are 400;
#  - the same tool_choice calls on the edge-local API (edge --listen --chat-template-file): the
#    grammar travels to the server (protocol version 4), the greedy call equals the server's own;
#  - a built-in template (--chat-template chatml) takes no tools: 400 naming 'tools'.
# What the model makes of tools (tool_calls in the reply, streamed and not) needs a model that calls
# them: tests/test_real_tools.sh; the parsing itself is tests/test_oai.c's.
. "$(dirname "$0")/lib.sh"
es_test_init http-tools
model=$models/stories260K.gguf
data=$(cd "$(dirname "$0")" && pwd)/data/chat-templates
command -v curl >/dev/null || { echo "test_http_tools: curl is required" >&2; exit 1; }
es_reap_on_exit

# post PATH JSON: "STATUS BODY" of a POST to the server on $hport
post() { curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$hport$1" -H 'Content-Type: application/json' -d "$2"; }
status_is() { # NAME WANT GOT
  if [ "$3" = "$2" ]; then ok; else bad "$1: status $3 (want $2): $(head -c 400 "$tmp/body")"; fi
}

tools='"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
history='"messages":[{"role":"system","content":"You can look up weather."},{"role":"user","content":"Weather in Paris?"},
  {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
  {"role":"tool","tool_call_id":"call_1","content":"{\"temp\": 18}"}]'

# ---- a Jinja template with tools from a file (a compact one: the tiny model's context is 512 tokens,
# less than Qwen2.5's tool preamble; tests/test_jinja.c holds Qwen2.5's own against jinja2) ----
cp "$data/../tools-compact.jinja" "$tmp/tools.jinja" # (also the openai client test's)
es_serve_start "$tmp/qwen.log" --chat-template-file "$tmp/tools.jinja"
[ -n "$hport" ] || { bad "serve with --chat-template-file did not start: $(tail -n 5 "$tmp/qwen.log")"; es_test_finish test_http_tools; exit; }
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4,$tools}")
status_is "chat with tools" 200 "$s"
has "$tmp/body" '"finish_reason":"'
s=$(post /v1/chat/completions "{$history,\"max_tokens\":4,$tools}")
status_is "tool history" 200 "$s"
s=$(post /v1/chat/completions "{$history,\"max_tokens\":4,$tools,\"stream\":true}")
status_is "tool history streamed" 200 "$s"
has "$tmp/body" 'data: [DONE]'
s=$(post /v1/chat/completions "{$history,\"max_tokens\":4,$tools,\"tool_choice\":\"none\"}")
status_is "tool_choice none" 200 "$s"
# tool_choice "required" / a named function: enforced by constrained decoding, so even the tiny story
# model answers with a call (tools whose arguments are enums keep the reply short and complete)
etools='"tools":[{"type":"function","function":{"name":"set_unit","parameters":{"type":"object","properties":{"unit":{"enum":["c","f"]}},"required":["unit"],"additionalProperties":false}}},{"type":"function","function":{"name":"set_mode","parameters":{"type":"object","properties":{"mode":{"enum":["on","off"]}},"required":["mode"]}}}]'
check_call() { # NAME WANT_TOOL(s, |-separated) [stream]
  python3 - "$tmp/body" "$2" "${3:-}" <<'PY' && ok || bad "$1: $(head -c 600 "$tmp/body")"
import json, sys
body, want, stream = open(sys.argv[1]).read(), sys.argv[2].split("|"), sys.argv[3] == "stream"
if stream:
    ev = [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: ") and l != "data: [DONE]"]
    calls = [tc for e in ev for c in e["choices"] for tc in c.get("delta", {}).get("tool_calls") or []]
    fin = [c["finish_reason"] for e in ev for c in e["choices"] if c.get("finish_reason")]
else:
    ch = json.loads(body)["choices"][0]
    calls, fin = ch["message"].get("tool_calls") or [], [ch["finish_reason"]]
assert fin == ["tool_calls"] and len(calls) == 1, (fin, calls)
f = calls[0]["function"]
args = json.loads(f["arguments"])
assert f["name"] in want, f
assert args in ({"unit": "c"}, {"unit": "f"}) if f["name"] == "set_unit" else args.get("mode") in ("on", "off"), args
PY
}
# "required" with one tool: its arguments follow its schema (with several, only the name is one of
# them and the arguments any object, which a story model fills without end)
otool='"tools":[{"type":"function","function":{"name":"set_unit","parameters":{"type":"object","properties":{"unit":{"enum":["c","f"]}},"required":["unit"]}}}]'
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$otool,\"tool_choice\":\"required\"}")
status_is "tool_choice required" 200 "$s"
check_call "tool_choice required" "set_unit"
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$etools,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"set_unit\"}}}")
status_is "tool_choice named" 200 "$s"
check_call "tool_choice named" "set_unit"
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$etools,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"set_mode\"}},\"stream\":true}")
status_is "tool_choice named, streamed" 200 "$s"
check_call "tool_choice named, streamed" "set_mode" stream
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":8,$etools,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}}")
status_is "tool_choice naming no tool" 400 "$s"
has "$tmp/body" '"param":"tool_choice"'
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":8,$etools,\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_object\"}}")
status_is "tool_choice required with a JSON response_format" 400 "$s"
s=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"tool_choice":"required"}')
status_is "tool_choice required without tools" 400 "$s"
s=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"tools":[{"type":"function","function":{}}]}')
status_is "a tool without a name" 400 "$s"
has "$tmp/body" '"param":"tools"'
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$otool,\"tool_choice\":\"required\",\"temperature\":0}")
cp "$tmp/body" "$tmp/server_required.json"

# ---- the same on the edge-local API (protocol version 4 carries the call's grammar to the server;
# the edge drafts under it): the same calls, the greedy one identical to the server's own ----
"$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 --parallel 1 -t 1 \
  --chat-template-file "$tmp/tools.jinja" >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
if [ -z "$lport" ]; then
  bad "edge --listen did not start: $(tail -n 5 "$tmp/edge.err")"
else
  spport=$hport
  hport=$lport
  s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$otool,\"tool_choice\":\"required\",\"temperature\":0}")
  status_is "edge: tool_choice required" 200 "$s"
  check_call "edge: tool_choice required" "set_unit"
  python3 - "$tmp/body" "$tmp/server_required.json" <<'PY' && ok || bad "edge: the greedy call differs from the server's: $(head -c 300 "$tmp/body")"
import json, sys
e, s = (json.load(open(f))["choices"][0]["message"]["tool_calls"][0]["function"] for f in sys.argv[1:3])
assert e == s, (e, s)
PY
  s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":256,$etools,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"set_mode\"}},\"stream\":true}")
  status_is "edge: tool_choice named, streamed" 200 "$s"
  check_call "edge: tool_choice named, streamed" "set_mode" stream
  s=$(post /v1/chat/completions "{$history,\"max_tokens\":4,$tools}")
  status_is "edge: tool history" 200 "$s"
  hport=$spport
  kill "$epid" 2>/dev/null
  wait "$epid" 2>/dev/null
fi
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null

# ---- a template that refuses a conversation: raise_exception is the client's 400 ----
es_serve_start "$tmp/mistral.log" --chat-template-file "$data/mistral.jinja"
s=$(post /v1/chat/completions '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"max_tokens":2}')
status_is "mistral refuses a system message" 400 "$s"
has "$tmp/body" "Conversation roles must alternate"
s=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}')
status_is "mistral after a refusal" 200 "$s"
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,$tools}")
status_is "mistral's template takes no tools" 400 "$s"
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null

# ---- a built-in family takes no tools ----
es_serve_start "$tmp/chatml.log" --chat-template chatml
s=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,$tools}")
status_is "chatml with tools" 400 "$s"
has "$tmp/body" "does not take tools"
s=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"42"}],"max_tokens":2}')
status_is "chatml with a tool result" 200 "$s"

es_test_finish test_http_tools
