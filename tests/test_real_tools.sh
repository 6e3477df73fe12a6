#!/usr/bin/env bash
# test_real_tools.sh — tool calls with the real Qwen2.5-Coder 1.5B and its own Jinja chat template
# (tokenizer.chat_template in the GGUF, the default): asked for the weather with a get_weather tool,
# greedy, the reply is an OpenAI tool call (finish_reason "tool_calls", the function's name, JSON
# arguments naming the city; content null), streamed as one tool_calls delta with no content deltas
# of the call's JSON; the conversation continues with the tool's result (200, content); the same
# through the official openai client (plain, streamed, the next turn). Skipped (77)
# without the real models (make models-real).
. "$(dirname "$0")/lib.sh"
es_test_init real-tools
cache=${EDGESPEC_CACHE:-$HOME/.cache/edgespec/models}
model=$cache/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
if [ ! -r "$model" ]; then
  echo "test_real_tools: SKIPPED: the real model is not in $cache (make models-real fetches it)"
  exit 77
fi
command -v curl >/dev/null || { echo "test_real_tools: curl is required" >&2; exit 1; }
es_reap_on_exit
es_serve_start "$tmp/serve.log"
[ -n "$hport" ] || { bad "serve did not start: $(tail -n 5 "$tmp/serve.log")"; es_test_finish test_real_tools; exit; }

tools='"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
ask='"messages":[{"role":"user","content":"What is the weather in Paris?"}],"max_tokens":64,"temperature":0'
curl -s "http://127.0.0.1:$hport/v1/chat/completions" -H 'Content-Type: application/json' -d "{$ask,$tools}" >"$tmp/plain.json"
curl -sN "http://127.0.0.1:$hport/v1/chat/completions" -H 'Content-Type: application/json' -d "{$ask,$tools,\"stream\":true}" >"$tmp/stream.txt"
python3 - "$tmp/plain.json" "$tmp/stream.txt" <<'PY' && ok || bad "tool calls: $(head -c 600 "$tmp/plain.json")"
import json, sys
r = json.load(open(sys.argv[1]))
c = r["choices"][0]
assert c["finish_reason"] == "tool_calls", c
m = c["message"]
assert m["content"] is None, m
(call,) = m["tool_calls"]
assert call["type"] == "function" and call["id"].startswith("call_"), call
assert call["function"]["name"] == "get_weather", call
assert json.loads(call["function"]["arguments"])["city"] == "Paris", call
events = [json.loads(l[6:]) for l in open(sys.argv[2]) if l.startswith("data: {")]
deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
assert not any("get_weather" in d.get("content", "") for d in deltas), deltas
calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
assert len(calls) == 1 and calls[0][0]["index"] == 0 and calls[0][0]["function"] == call["function"], calls
assert events[-1]["choices"][0]["finish_reason"] == "tool_calls", events[-1]
PY
# the next turn: the call (OpenAI's JSON-text arguments) and its result in the history
next='"messages":[{"role":"user","content":"What is the weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"{\"temperature_c\": 21}"}],"max_tokens":24,"temperature":0'
code=$(curl -s -o "$tmp/next.json" -w '%{http_code}' "http://127.0.0.1:$hport/v1/chat/completions" -H 'Content-Type: application/json' -d "{$next,$tools}")
[ "$code" = 200 ] && ok || bad "the turn after a tool result: $code $(head -c 300 "$tmp/next.json")"
# the official openai client (build/venv): the call through its types, plain and streamed
py=$(es_venv_python) || { bad "no venv for the openai client"; es_test_finish test_real_tools; exit; }
"$py" - "http://127.0.0.1:$hport/v1" <<'PY' >"$tmp/client.txt" 2>&1 && ok || bad "openai client: $(tail -c 600 "$tmp/client.txt")"
import json, sys
import openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="none")
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
r = c.chat.completions.create(model="m", messages=msgs, tools=tools, temperature=0, max_tokens=64)
ch = r.choices[0]
assert ch.finish_reason == "tool_calls" and ch.message.content is None, ch
tc = ch.message.tool_calls[0]
assert tc.type == "function" and tc.function.name == "get_weather" and json.loads(tc.function.arguments)["city"] == "Paris", tc
name, args, finish = "", "", None
for chunk in c.chat.completions.create(model="m", messages=msgs, tools=tools, temperature=0, max_tokens=64, stream=True):
    d = chunk.choices[0].delta
    for t in d.tool_calls or []:
        name += t.function.name or ""
        args += t.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
assert (name, finish) == ("get_weather", "tool_calls") and json.loads(args) == json.loads(tc.function.arguments), (name, args, finish)
# the next turn, with the client's own objects in the history
msgs += [ch.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": tc.id, "content": '{"temperature_c": 21}'}]
r2 = c.chat.completions.create(model="m", messages=msgs, tools=tools, temperature=0, max_tokens=24)
assert r2.choices[0].finish_reason in ("stop", "length", "tool_calls"), r2
print("ok")
PY
es_test_finish test_real_tools
