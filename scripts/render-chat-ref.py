#!/usr/bin/env python3
"""render-chat-ref.py — renders a model's own chat template (tokenizer.chat_template of its GGUF) with
Python's jinja2 for a fixed set of conversations, the way Hugging Face's apply_chat_template does
(sandboxed environment, trim_blocks and lstrip_blocks, a tojson filter, add_generation_prompt true,
no tools). tests/test_real.c checks edgespec's native rendering against it.

Usage:
  build/venv/bin/python scripts/render-chat-ref.py MODEL.gguf OUT.jsonl

Output: one JSON object per line, {"messages": [{"role": ..., "content": ...}, ...], "text": ...}."""
import json
import sys

from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "system", "content": "You are a terse C expert."}, {"role": "user", "content": "What does restrict mean?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Explain\nmulti-line\n\ninput\twith tabs."}],
    [{"role": "user", "content": "Unicode: 日本語, café, 🙂, ∑x²"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
    [{"role": "user", "content": "def f(x):\n    return x ** 2\n\n# what does f(3) return?"}],
    [{"role": "user", "content": "first"}, {"role": "system", "content": "a system message later on"},
     {"role": "user", "content": "second"}],
    [{"role": "user", "content": "What is the weather?"}, {"role": "tool", "content": "{\"temp\": 21}"}],
    [{"role": "user", "content": "Two lookups"}, {"role": "tool", "content": "a=1"}, {"role": "tool", "content": "b=2"},
     {"role": "user", "content": "Sum them."}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
    [{"role": "user", "content": "  leading and trailing spaces  "}],
    [{"role": "user", "content": "quotes ' \" and braces {{ }} {% %}"}],
]


def main(argv):
    if len(argv) != 3:
        print("usage: render-chat-ref.py MODEL.gguf OUT.jsonl", file=sys.stderr)
        return 2
    tmpl = GGUFReader(argv[1]).fields["tokenizer.chat_template"].contents()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    t = env.from_string(tmpl)
    with open(argv[2], "w", encoding="utf-8") as f:
        for msgs in CONVERSATIONS:
            text = t.render(messages=msgs, add_generation_prompt=True, tools=None)
            f.write(json.dumps({"messages": msgs, "text": text}, ensure_ascii=False) + "\n")
    print(f"rendered {len(CONVERSATIONS)} conversations into {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
