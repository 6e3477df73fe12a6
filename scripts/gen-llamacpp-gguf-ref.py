#!/usr/bin/env python3
"""gen-llamacpp-gguf-ref.py — what llama.cpp makes of the GGUF files edgespec writes: for each file, the
prompt ids of a few story prompts as llama.cpp tokenises them (BOS as the vocabulary asks, control-token
text not parsed) and the tokens it then generates greedily (argmax of the logits, one token at a time).
tests/test_gguf_llamacpp.sh writes the same files again and holds edgespec's `run` to these ids
(tests/data/written-gguf-llamacpp-ref.jsonl).

Needs llama-cpp-python (pinned in scripts/requirements-llamacpp.txt), which builds its vendored
llama.cpp from source: it is a development tool, not a test dependency; only its output is committed.

Usage:
  python scripts/gen-llamacpp-gguf-ref.py OUT.jsonl N_TOKENS KIND=FILE.gguf...

Output: one JSON object per line, {"kind": ..., "prompt": ..., "prompt_ids": [...], "ids": [...]}."""
import json
import sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "Once upon a time",
    "Lily and Tom went to the park.",
    "The little dog was sad because",
    "One day, a big red ball",
]


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, n = argv[1], int(argv[2])
    with open(out, "w", encoding="utf-8") as f:
        for spec in argv[3:]:
            kind, path = spec.split("=", 1)
            llm = Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=2, seed=0, verbose=False)
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            n_vocab = llm.n_vocab()
            for p in PROMPTS:
                llm.reset()
                prompt_ids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=False)
                llm.eval(prompt_ids)
                ids = []
                for _ in range(n):
                    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                    t = int(logits.argmax())
                    ids.append(t)
                    if llama_cpp.llama_vocab_is_eog(vocab, t):
                        break
                    llm.eval([t])
                f.write(json.dumps({"kind": kind, "prompt": p, "prompt_ids": prompt_ids, "ids": ids},
                                   ensure_ascii=False) + "\n")
            del llm
    print(f"wrote {len(PROMPTS) * (len(argv) - 3)} continuations to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
