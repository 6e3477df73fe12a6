#!/usr/bin/env python3
"""gen-hf-tokenizer-ref.py — writes the reference encodings tests/test_tokenizer.c checks edgespec's
tokenizer against: Hugging Face's own `tokenizers` library (pinned in scripts/requirements-test.txt,
installed into build/venv by scripts/install-deps.sh) run on a model folder's tokenizer.json.

Usage:
  build/venv/bin/python scripts/gen-hf-tokenizer-ref.py ../shared/models/TinyStories-656K \\
      ../shared/prompts/stories.txt tests/data/tinystories656k-tokenizer-ref.jsonl

Output: one JSON object per line, {"text": ..., "ids": [...]}, ids as encode() returns them with
add_special_tokens true (TinyStories-656K's post-processor puts BOS <|start_story|> = 1 first)."""
import json
import os
import sys

from tokenizers import Tokenizer

EXTRA = [
    "Hello, world!",
    "The year 2024 had 365 days; 12 months, 52 weeks.",
    "Call 555-0199 or 1-800-123-4567 now!!!",
    "Numbers: 0 1 22 333 4444 55555 3.14159 -42 +7 1,000,000",
    "Wait... what?! (Really?) [yes] {no} <maybe> \"quoted\" 'single'",
    "a  b   c    d     e",
    "   leading spaces",
    "trailing spaces   ",
    " one leading space",
    "Line one.\nLine two.\n\nLine four after a blank line.",
    "\n\nstarts with newlines",
    "ends with a newline\n",
    "Tabs\tbetween\twords",
    "Windows\r\nline ending",
    "I went to the café and ordered a crème brûlée.",
    "Naïve façade, jalapeño, Zürich, smørrebrød.",
    "The cat said 🐱 and the dog said 🐶! 🎉🎉",
    "日本語のテキストと中文文本。",
    "Ελληνικά και русский текст.",
    "Mixed: x² + y² = z², 5 € or £3, 100% ✓",
    "It's Tom's dog; they're sure we'll see it. I'd've known.",
    "ALL CAPS SHOUTING AND lower case whispers",
    "x",
    " ",
    "  ",
    "\n",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. "
    "One day, she saw a big, red ball in the park.",
    "The end.",
    "email@example.com http://example.org/path?q=1&r=2#frag",
    "snake_case and camelCase and kebab-case",
    "Zero-width\u200bspace and non\u00a0breaking space",
]


def main(argv):
    if len(argv) != 4:
        print("usage: gen-hf-tokenizer-ref.py MODEL_DIR PROMPTS_TXT OUT_JSONL", file=sys.stderr)
        return 2
    model_dir, prompts_file, out_file = argv[1:]
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    # split on "\n" only, like the prompts file's lines (str.splitlines would also split on \r, \v, ...)
    with open(prompts_file, encoding="utf-8") as f:
        prompts = [line for line in f.read().split("\n") if line]
    texts = prompts + EXTRA
    with open(out_file, "w", encoding="utf-8") as f:
        for text in texts:
            ids = tok.encode(text, add_special_tokens=True).ids
            # the JavaScript generator wrote JSON.stringify's compact form; keep the bytes identical
            f.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(texts)} encodings to {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
