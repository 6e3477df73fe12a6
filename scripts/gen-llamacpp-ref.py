#!/usr/bin/env python3
"""gen-llamacpp-ref.py — writes llama.cpp's greedy continuations of 20 code prompts on a GGUF, the
reference tests/test_real_cli.sh holds edgespec's `run` against (tests/data/*-llamacpp-ref.jsonl).

Needs llama-cpp-python (pinned in scripts/requirements-llamacpp.txt), which builds its vendored
llama.cpp from source: it is a development tool, not a test dependency; only its output is committed.

Usage:
  python scripts/gen-llamacpp-ref.py MODEL.gguf OUT.jsonl [N_TOKENS]
  python scripts/gen-llamacpp-ref.py --margins MODEL.gguf IN.jsonl OUT.jsonl

Output: one JSON object per line, {"prompt": ..., "prompt_ids": [...], "ids": [...]}: the prompt as
llama.cpp tokenises it (no BOS, as the Qwen2 vocabulary asks; control-token text not parsed) and the
N_TOKENS (default 32) tokens it then generates greedily (argmax of the logits, one token at a time,
stopping early only at an end-of-generation token). --margins adds "margins": for each generated
token, llama.cpp's own top-1 minus top-2 logit at that step, from one batched pass over prompt and
continuation; a step with a margin near 0 is a near tie, where kernels that round differently (and
llama.cpp itself, batched or token by token) may pick either token."""
import json
import sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "def fibonacci(n):",
    "// Return the index of x in the sorted array a[0..n), or -1.\nint binary_search(const int *a, int n, int x) {",
    "import json\n\ndef load_config(path):\n    \"\"\"Read a JSON config file and return it as a dict.\"\"\"",
    "def quicksort(xs):\n    \"\"\"Sort the list xs and return a new list.\"\"\"",
    "#include <stdio.h>\n\nint main(void) {\n",
    "class Stack:\n    def __init__(self):",
    "function debounce(fn, ms) {",
    "SELECT customers.name, SUM(orders.total)\nFROM customers",
    "fn gcd(a: u64, b: u64) -> u64 {",
    "# Write a function that checks whether a string is a palindrome.\ndef is_palindrome(s):",
    "package main\n\nimport \"fmt\"\n\nfunc main() {",
    "def read_lines(path):\n    with open(path) as f:",
    "#!/bin/bash\n# Count the lines of every .c file under src/\n",
    "public static int factorial(int n) {",
    "import numpy as np\n\ndef softmax(x):",
    "struct node {\n    int value;\n    struct node *next;\n};\n\nstruct node *list_reverse(struct node *head) {",
    "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists.\"\"\"\n    i = j = 0\n    out = []",
    "const express = require('express');\nconst app = express();\n",
    "def parse_args():\n    import argparse\n    p = argparse.ArgumentParser(",
    "template <typename T>\nT clamp(T v, T lo, T hi) {",
]


def add_margins(model, src, dst):
    llm = Llama(model_path=model, n_ctx=256, n_batch=256, n_threads=2, seed=0, verbose=False, logits_all=True)
    n_vocab = llm.n_vocab()
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            r = json.loads(line)
            llm.reset()
            p, ids = r["prompt_ids"], r["ids"]
            llm.eval(p + ids[:-1])
            margins = []
            for k in range(len(ids)):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, len(p) - 1 + k), shape=(n_vocab,))
                top = np.partition(row, -2)[-2:]
                margins.append(round(float(top[1] - top[0]), 4))
            r["margins"] = margins
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "--margins":
        return add_margins(argv[2], argv[3], argv[4])
    if len(argv) not in (3, 4):
        print("usage: gen-llamacpp-ref.py MODEL.gguf OUT.jsonl [N_TOKENS]", file=sys.stderr)
        return 2
    n = int(argv[3]) if len(argv) == 4 else 32
    llm = Llama(model_path=argv[1], n_ctx=256, n_batch=256, n_threads=2, seed=0, verbose=False, logits_all=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()
    with open(argv[2], "w", encoding="utf-8") as f:
        for p in PROMPTS:
            llm.reset()
            prompt_ids = llm.tokenize(p.encode("utf-8"), add_bos=False, special=False)
            llm.eval(prompt_ids)
            ids = []
            for _ in range(n):
                # the last evaluated row's logits, straight from the context (Llama.scores is only
                # filled with logits_all)
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                t = int(logits.argmax())
                ids.append(t)
                if llama_cpp.llama_vocab_is_eog(vocab, t):
                    break
                llm.eval([t])
            f.write(json.dumps({"prompt": p, "prompt_ids": prompt_ids, "ids": ids}, ensure_ascii=False) + "\n")
            f.flush()
    print(f"wrote {len(PROMPTS)} continuations to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
