"""The official `openai` Python client (pinned in scripts/requirements-test.txt) against edgespec's
OpenAI-compatible API: run by tests/test_openai_client.sh with the server's and the edge's base URLs.

Per API: models (list, retrieve, a missing model -> NotFoundError), a completion and a chat equal to
`edgespec run` on the target (text, finish_reason, usage), both streams (completion and chat, with the
usage chunk), a sampled completion, and the error classes the client maps statuses to
(AuthenticationError 401, BadRequestError 400 naming the parameter, NotFoundError 404).
logprobs (both APIs: completions logprobs=N and chat logprobs + top_logprobs, plain and streamed, read
through the client's types): greedy, each emitted token is the first of its top_logprobs and its
logprob their maximum, every logprob <= 0, the top ones sorted with probabilities summing to <= 1,
the tokens spell the text, the streamed values equal the plain ones, and the edge-local API's equal
the server's (they come from its verification). n = 2 on both, plain and streamed.
Tool calls (both APIs, on a second server / edge with tests/data/tools-compact.jinja): tool_choice
"required" gives one call of the tool through the client's types, plain and streamed, the same on both.
JSON mode (both APIs): response_format json_schema (nested object, array, enum, integer, boolean) and
json_object, chat and completions, plain and streamed: the text parses and validates; a schema outside
the supported subset is refused with 400 naming response_format."""
import math
import json
import sys
import urllib.request

import openai

server_url, server_key, edge_url, edge_key, ref_completion, ref_chat, tools_server_url, tools_edge_url = sys.argv[1:9]
ref_c = json.load(open(ref_completion))
ref_h = json.load(open(ref_chat))
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def raises(cls, status, fn, what, needle=None):
    try:
        fn()
    except cls as e:
        ok = e.status_code == status and (needle is None or needle in str(e))
        check(ok, f"{what}: {type(e).__name__} {e.status_code} {e}")
        return
    except Exception as e:  # another class: the status was mapped wrongly
        check(False, f"{what}: {type(e).__name__} {e}")
        return
    check(False, f"{what}: accepted")


def check_greedy_lp(name, toks, lps, tops):
    """toks[i] (text), lps[i] (float), tops[i] ([(text, logprob)] most likely first) of greedy tokens."""
    check(len(toks) > 0 and len(toks) == len(lps) == len(tops), f"{name}: {len(toks)} tokens, {len(lps)} logprobs, {len(tops)} tops")
    for i, (t, lp, top) in enumerate(zip(toks, lps, tops)):
        vals = [v for _, v in top]
        ok = (lp <= 0 and len(top) > 0 and top[0][0] == t and abs(top[0][1] - lp) < 1e-6 and lp >= max(vals) - 1e-6
              and vals == sorted(vals, reverse=True) and all(v <= 0 for v in vals) and sum(math.exp(v) for v in vals) <= 1 + 1e-5)
        check(ok, f"{name}: token {i} {t!r} logprob {lp} top {top}")


def logprobs_suite(name, client, model):
    prompt, messages = "Once upon a time", [{"role": "user", "content": "Tell me about the cat."}]
    c = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0, logprobs=5)
    lp = c.choices[0].logprobs
    check(lp is not None and "".join(lp.tokens) == c.choices[0].text, f"{name}: completion logprobs tokens {lp}")
    check(all(len(d) == 5 for d in lp.top_logprobs), f"{name}: completion top_logprobs sizes {lp.top_logprobs}")
    check(lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))], f"{name}: text_offset {lp.text_offset}")
    tops = [sorted(d.items(), key=lambda kv: -kv[1]) for d in lp.top_logprobs]
    check_greedy_lp(f"{name} completion", lp.tokens, lp.token_logprobs, tops)
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0, logprobs=5, stream=True)
    st, sv = [], []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs:
            st += chunk.choices[0].logprobs.tokens
            sv += chunk.choices[0].logprobs.token_logprobs
    check(st == lp.tokens and all(abs(a - b) < 1e-6 for a, b in zip(sv, lp.token_logprobs)), f"{name}: streamed completion logprobs {st} {sv}")
    got_lp[name] = (lp.tokens, lp.token_logprobs)

    h = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0, logprobs=True, top_logprobs=3)
    content = h.choices[0].logprobs.content
    check("".join(e.token for e in content) == h.choices[0].message.content, f"{name}: chat logprobs tokens {content}")
    check(all(bytes(e.bytes) == e.token.encode() for e in content), f"{name}: chat logprobs bytes")
    check(all(len(e.top_logprobs) == 3 for e in content), f"{name}: chat top_logprobs sizes")
    check_greedy_lp(f"{name} chat", [e.token for e in content], [e.logprob for e in content],
                    [[(t.token, t.logprob) for t in e.top_logprobs] for e in content])
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0, logprobs=True, top_logprobs=3,
                                            stream=True)
    sc = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            sc += chunk.choices[0].logprobs.content
    check([e.token for e in sc] == [e.token for e in content] and all(abs(a.logprob - b.logprob) < 1e-6 for a, b in zip(sc, content)),
          f"{name}: streamed chat logprobs {sc}")
    # logprobs without alternatives; the sampled path reports the same kind of numbers
    h = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0.9, seed=3, logprobs=True)
    content = h.choices[0].logprobs.content
    check(len(content) > 0 and all(e.logprob <= 0 and e.top_logprobs == [] for e in content), f"{name}: sampled chat logprobs {content}")
    raises(openai.BadRequestError, 400,
           lambda: client.chat.completions.create(model=model, messages=messages, max_tokens=4, top_logprobs=21, logprobs=True),
           f"{name}: top_logprobs 21", "top_logprobs")


JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"enum": ["happy", "sad"]},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 3},
        "friend": {"type": "object", "properties": {"age": {"type": "integer"}, "kind": {"enum": ["fox", "owl"]}},
                   "required": ["kind"], "additionalProperties": False},
    },
    "required": ["mood", "count", "ok", "tags"],
    "additionalProperties": False,
}


def valid(doc):
    """The JSON_SCHEMA constraints, checked by hand."""
    if not isinstance(doc, dict) or not set(doc) <= set(JSON_SCHEMA["properties"]) or not set(JSON_SCHEMA["required"]) <= set(doc):
        return False
    f = doc.get("friend", {"kind": "fox"})
    return (doc["mood"] in ("happy", "sad") and type(doc["count"]) is int and type(doc["ok"]) is bool
            and isinstance(doc["tags"], list) and len(doc["tags"]) <= 3 and all(t in ("cat", "dog") for t in doc["tags"])
            and isinstance(f, dict) and f.get("kind") in ("fox", "owl") and set(f) <= {"age", "kind"}
            and type(f.get("age", 0)) is int)


def json_suite(name, client, model, base_url, api_key):
    # the tiny story model pads with blank tokens wherever JSON allows whitespace: a logit bias (a
    # request field like any other) keeps its documents short enough for max_tokens
    body = json.dumps({"content": " \n  ", "add_special": False}).encode()
    rq = urllib.request.Request(base_url[:-3] + "/tokenize", data=body, headers={"Authorization": f"Bearer {api_key}"})
    blank = sorted(set(json.load(urllib.request.urlopen(rq))["tokens"]))
    bias = {str(t): -100 for t in blank}
    fmt = {"type": "json_schema", "json_schema": {"name": "pet", "schema": JSON_SCHEMA, "strict": True}}
    messages = [{"role": "user", "content": "Tell me about the cat."}]
    for temp, seed in ((0, None), (0.9, 7), (1.0, 11)):
        h = client.chat.completions.create(model=model, messages=messages, max_tokens=300, temperature=temp, seed=seed,
                                           response_format=fmt, logit_bias=bias)
        text = h.choices[0].message.content
        check(h.choices[0].finish_reason == "stop", f"{name}: json_schema chat (T={temp}) finish {h.choices[0].finish_reason}: {text!r}")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        check(doc is not None and valid(doc), f"{name}: json_schema chat (T={temp}) output {text!r}")
    # the client's completions.create has no response_format parameter (OpenAI serves it for chat only)
    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=300, temperature=0,
                                  extra_body={"response_format": fmt}, logit_bias=bias)
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=300, temperature=0,
                                       extra_body={"response_format": fmt}, logit_bias=bias, stream=True)
    st = "".join(ch.choices[0].text for ch in stream if ch.choices)
    check(st == c.choices[0].text, f"{name}: streamed json_schema completion {st!r} != {c.choices[0].text!r}")
    try:
        check(valid(json.loads(st)), f"{name}: json_schema completion {st!r}")
    except ValueError:
        check(False, f"{name}: json_schema completion does not parse: {st!r}")
    # json_object: any object; '"' and '}' are pushed too, so that strings and the object close within max_tokens
    for piece, b in (('"', 8), ("}", 40)):
        rq = urllib.request.Request(base_url[:-3] + "/tokenize", data=json.dumps({"content": piece, "add_special": False}).encode(),
                                    headers={"Authorization": f"Bearer {api_key}"})
        for t in json.load(urllib.request.urlopen(rq))["tokens"]:
            bias[str(t)] = b
    h = client.chat.completions.create(model=model, messages=messages, max_tokens=300, temperature=0,
                                       response_format={"type": "json_object"}, logit_bias=bias)
    text = h.choices[0].message.content
    try:
        check(isinstance(json.loads(text), dict) and h.choices[0].finish_reason == "stop", f"{name}: json_object chat {text!r}")
    except ValueError:
        check(False, f"{name}: json_object chat does not parse: {text!r}")
    raises(openai.BadRequestError, 400,
           lambda: client.chat.completions.create(model=model, messages=messages, max_tokens=4, response_format={
               "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}),
           f"{name}: unsupported schema keyword", "response_format")


TOOLS = [{"type": "function", "function": {"name": "set_unit", "description": "Sets the temperature unit",
          "parameters": {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]}}}]


def tools_suite(name, client, model):
    """tool_choice "required" (a call is enforced by the grammar of a call of the tool, which the edge
    carries to the server): the client reads tool_calls, plain and streamed; greedy, the same call both
    ways and on both APIs."""
    messages = [{"role": "user", "content": "Use Fahrenheit."}]
    h = client.chat.completions.create(model=model, messages=messages, max_tokens=256, temperature=0, tools=TOOLS, tool_choice="required")
    ch = h.choices[0]
    calls = ch.message.tool_calls or []
    check(ch.finish_reason == "tool_calls" and len(calls) == 1 and calls[0].type == "function" and calls[0].function.name == "set_unit",
          f"{name}: tool call {ch}")
    args = json.loads(calls[0].function.arguments) if calls else None
    check(args in ({"unit": "c"}, {"unit": "f"}), f"{name}: tool call arguments {args}")
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=256, temperature=0, tools=TOOLS, tool_choice="required",
                                            stream=True)
    sname, sargs, fins = "", "", []
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                if tc.function:
                    sname += tc.function.name or ""
                    sargs += tc.function.arguments or ""
            if c.finish_reason:
                fins.append(c.finish_reason)
    check(fins == ["tool_calls"] and sname == "set_unit" and calls and sargs == calls[0].function.arguments,
          f"{name}: streamed tool call {sname!r} {sargs!r} {fins}")
    got_call[name] = (calls[0].function.name, calls[0].function.arguments) if calls else None


def suite(name, base_url, api_key, model):
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)

    models = client.models.list()
    ids = [m.id for m in models.data]
    check(ids == [model], f"{name}: models.list -> {ids}")
    m = client.models.retrieve(model)
    check(m.id == model and m.object == "model", f"{name}: models.retrieve -> {m}")
    raises(openai.NotFoundError, 404, lambda: client.models.retrieve("no-such-model"), f"{name}: missing model")

    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0)
    check(c.object == "text_completion", f"{name}: completion object {c.object}")
    check(c.choices[0].text == ref_c["text"], f"{name}: completion text {c.choices[0].text!r} != run {ref_c['text']!r}")
    check(c.choices[0].finish_reason == "length", f"{name}: completion finish_reason {c.choices[0].finish_reason}")
    u = c.usage
    check(u.prompt_tokens == ref_c["n_prompt"] and u.completion_tokens == ref_c["n_generated"]
          and u.total_tokens == u.prompt_tokens + u.completion_tokens, f"{name}: completion usage {u}")

    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    text, chunks, usage, finish = "", 0, None, None
    for chunk in stream:
        chunks += 1
        check(chunk.object == "text_completion", f"{name}: completion chunk object {chunk.object}")
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
    check(chunks > 3, f"{name}: only {chunks} completion chunks")
    check(text == ref_c["text"], f"{name}: streamed completion {text!r} != run {ref_c['text']!r}")
    check(finish == "length", f"{name}: streamed completion finish_reason {finish}")
    check(usage is not None and usage.completion_tokens == ref_c["n_generated"], f"{name}: streamed completion usage {usage}")

    messages = [{"role": "user", "content": "Tell me about the cat."}]
    h = client.chat.completions.create(model=model, messages=messages, max_tokens=40, temperature=0)
    check(h.object == "chat.completion", f"{name}: chat object {h.object}")
    check(h.choices[0].message.role == "assistant", f"{name}: chat role {h.choices[0].message.role}")
    check(h.choices[0].message.content == ref_h["text"],
          f"{name}: chat text {h.choices[0].message.content!r} != run {ref_h['text']!r}")
    check(h.usage.prompt_tokens == ref_h["n_prompt"] and h.usage.completion_tokens == ref_h["n_generated"],
          f"{name}: chat usage {h.usage}")

    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=40, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    text, chunks, usage, finish, role = "", 0, None, None, None
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"{name}: chat chunk object {chunk.object}")
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        role = d.role or role
        text += d.content or ""
        finish = chunk.choices[0].finish_reason or finish
    check(chunks > 3, f"{name}: only {chunks} chat chunks")
    check(role == "assistant", f"{name}: streamed role {role}")
    check(text == ref_h["text"], f"{name}: streamed chat {text!r} != run {ref_h['text']!r}")
    check(finish == "length", f"{name}: streamed chat finish_reason {finish}")
    check(usage is not None and usage.prompt_tokens == ref_h["n_prompt"] and usage.completion_tokens == ref_h["n_generated"],
          f"{name}: streamed chat usage {usage}")

    # sampling runs and reports sane usage (its text follows the target's distribution: not comparable)
    s = client.completions.create(model=model, prompt="The dog", max_tokens=12, temperature=0.8, top_p=0.9, seed=7)
    check(1 <= s.usage.completion_tokens <= 12, f"{name}: sampled usage {s.usage}")

    bad = openai.OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0)
    raises(openai.AuthenticationError, 401, lambda: bad.completions.create(model=model, prompt="x", max_tokens=4),
           f"{name}: wrong key")
    raises(openai.BadRequestError, 400,
           lambda: client.chat.completions.create(model=model, messages=messages, max_tokens=-3),
           f"{name}: negative max_tokens", "max_tokens")
    raises(openai.BadRequestError, 400,
           lambda: client.completions.create(model=model, prompt="x", max_tokens=4, temperature=7),
           f"{name}: temperature 7", "temperature")
    # n = 2: two choices, indexed, each the greedy text; streamed, each index gets its own text and finish
    n2 = client.completions.create(model=model, prompt="Once upon a time", max_tokens=40, temperature=0, n=2)
    check([ch.index for ch in n2.choices] == [0, 1] and all(ch.text == ref_c["text"] for ch in n2.choices)
          and n2.usage.completion_tokens == 2 * ref_c["n_generated"], f"{name}: n=2 completion {n2}")
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=40, temperature=0, n=2, stream=True)
    texts, fins = {}, {}
    for chunk in stream:
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                fins[ch.index] = ch.finish_reason
    check(texts == {0: ref_h["text"], 1: ref_h["text"]} and fins == {0: "length", 1: "length"}, f"{name}: n=2 chat stream {texts} {fins}")
    # both APIs: the edge's come from the server's verification (protocol version 4), drafts masked
    # by the same grammar on the edge
    logprobs_suite(name, client, model)
    json_suite(name, client, model, base_url, api_key)
    # tool calls: the same kind of server / edge started with a chat template that takes tools
    tools_suite(name, openai.OpenAI(base_url=tools_server_url if name == "server" else tools_edge_url, api_key=api_key, max_retries=0,
                                    timeout=120), model)


got_lp, got_call = {}, {}
try:
    suite("server", server_url, server_key, "stories")
    suite("edge", edge_url, edge_key, "edgespec-edge")
    # the same target's numbers whichever API asked: the edge's verified rounds give the values the
    # server's own sessions give (batches differ in shape, so equal up to float rounding)
    s_t, s_v = got_lp.get("server", ([], []))
    e_t, e_v = got_lp.get("edge", ([], []))
    check(s_t == e_t and len(s_v) == len(e_v) and all(abs(a - b) < 1e-3 for a, b in zip(s_v, e_v)),
          f"edge logprobs equal the server's: {list(zip(e_t, e_v))} vs {list(zip(s_t, s_v))}")
    check(got_call.get("edge") is not None and got_call.get("edge") == got_call.get("server"),
          f"the edge's greedy tool call equals the server's: {got_call}")
except Exception as e:  # anything unexpected (a connection error, a parse error in the client) fails
    failed += 1
    print(f"FAIL: unexpected {type(e).__name__}: {e}", file=sys.stderr)
print(f"test_openai_client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
