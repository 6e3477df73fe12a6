#!/usr/bin/env python3
"""Writes tests/data/chat-templates/ref.jsonl: the renderings by Python's jinja2 (pinned in
scripts/requirements-test.txt) of the chat templates in tests/data/chat-templates/*.jinja for every
conversation in conversations.json, and of the feature snippets in snippets.json. tests/test_jinja.c
renders the same inputs with src/jinja/ and must match byte for byte (errors: the message of a
raise_exception, or only that there was an error).

The environment is the one Hugging Face transformers renders chat templates in
(transformers/utils/chat_template_utils.py): trim_blocks, lstrip_blocks, the loopcontrols extension,
raise_exception, strftime_now and tojson = json.dumps(ensure_ascii=False). strftime_now's clock is
fixed (NOW below) so the output is reproducible.

Usage: build/venv/bin/python scripts/chat-template-ref.py [tests/data/chat-templates]
"""
import datetime
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1767225600 + 13 * 3600 + 5 * 60  # 2026-01-01 13:05 UTC; the C test passes the same
BOS, EOS = "<s>", "</s>"


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).strftime(fmt)


def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e


def render(e, src, vars):
    try:
        return {"output": e.from_string(src).render(**vars)}
    except Exception as ex:  # noqa: BLE001 - any failure of the template is a reference result
        # raise_exception's message is compared; other errors only as errors (the wording is Python's)
        return {"error": str(ex) if type(ex) is jinja2.exceptions.TemplateError else ""}


def main():
    d = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/chat-templates")
    e = env()
    convs = json.loads((d / "conversations.json").read_text())
    snippets = json.loads((d / "snippets.json").read_text())
    out = []
    for t in sorted(d.glob("*.jinja")):
        src = t.read_text()
        for i, c in enumerate(convs):
            for agp in (True, False):
                vars = dict(c, add_generation_prompt=agp, bos_token=BOS, eos_token=EOS)
                out.append(dict(template=t.name, conversation=i, add_generation_prompt=agp, **render(e, src, vars)))
    for i, s in enumerate(snippets):
        out.append(dict(snippet=i, **render(e, s["t"], s["v"])))
    with open(d / "ref.jsonl", "w", encoding="utf-8") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    print(f"{len(out)} renderings ({sum('error' in o for o in out)} errors) -> {d / 'ref.jsonl'}", file=sys.stderr)


if __name__ == "__main__":
    main()
