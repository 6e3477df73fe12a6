"""The official `openai` Python client (pinned in scripts/requirements-test.txt) against edgespec's
OpenAI-compatible API: run by tests/test_openai_client.sh with the server's and the edge's base URLs.

Per API: models (list, retrieve, a missing model -> NotFoundError), a completion and a chat equal to
`edgespec run` on the target (text, finish_reason, usage), both streams (completion and chat, with the
usage chunk), a sampled completion, and the error classes the client maps statuses to
(AuthenticationError 401, BadRequestError 400 naming the parameter, NotFoundError 404)."""
import json
import sys

import openai

server_url, server_key, edge_url, edge_key, ref_completion, ref_chat = sys.argv[1:7]
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


try:
    suite("server", server_url, server_key, "stories")
    suite("edge", edge_url, edge_key, "edgespec-edge")
except Exception as e:  # anything unexpected (a connection error, a parse error in the client) fails
    failed += 1
    print(f"FAIL: unexpected {type(e).__name__}: {e}", file=sys.stderr)
print(f"test_openai_client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
