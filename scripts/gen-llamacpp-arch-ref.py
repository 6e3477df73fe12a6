#!/usr/bin/env python3
"""gen-llamacpp-arch-ref.py — reference logits from llama.cpp (llama-cpp-python) for the architectures
edgespec computes, on small random models `edgespec synth` writes (f32, fixed seeds, the phi-3
vocabulary of ../shared/tokenizer-tests). tests/test_arch_llamacpp.c makes the same files through the
library and checks edgespec's logits and greedy tokens against these.

Usage (llama-cpp-python in its own venv, see scripts/requirements-llamacpp.txt):
  /tmp/llvenv/bin/python scripts/gen-llamacpp-arch-ref.py build/edgespec ../shared tests/data/arch-llamacpp-ref.jsonl

Output: one JSON object per (model, prompt): {"arch", "shape", "seed", "prompt", "prompt_ids",
"top": [[id, logit], ...] (the 16 largest logits after the prompt), "greedy": [16 ids]}."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

# the models: keep in step with tests/test_arch_llamacpp.c
MODELS = [
    ("phi3", "custom:dim=128,ff=344,layers=3,heads=8,kv=4,ctx=512,vocab=32064,arch=phi3", 7),
    ("llama", "custom:dim=128,ff=344,layers=3,heads=8,kv=4,ctx=512,vocab=32064,arch=llama,tied=0", 11),
    # per-head q/k norms, no biases, a head size (48) that is not dim / heads
    ("qwen3", "custom:dim=128,ff=344,layers=3,heads=4,kv=2,headdim=48,ctx=512,vocab=32064,arch=qwen3", 13),
    # Llama 3.x RoPE factors (rope_freqs.weight); weights 5x the usual scale make attention peaked enough
    # that the rotation angles show in the logits
    ("llama3", "custom:dim=128,ff=344,layers=3,heads=8,kv=4,ctx=512,vocab=32064,arch=llama,tied=0,ropefreqs=1,wscale=5", 17),
]
PROMPTS = ["def fibonacci(n):", "Once upon a time, there was", "The capital of France is"]


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    binary, shared, out = argv[1:]
    vocab = os.path.join(shared, "tokenizer-tests", "ggml-vocab-phi-3.gguf")
    with tempfile.TemporaryDirectory() as tmp, open(out, "w") as f:
        for arch, shape, seed in MODELS:
            path = os.path.join(tmp, f"{arch}.gguf")
            subprocess.run([binary, "synth", "--random", "--shape", shape, "--seed", str(seed), "--tokenizer", vocab,
                            "-o", path], check=True, capture_output=True)
            llm = Llama(model_path=path, n_ctx=512, n_threads=1, logits_all=True, verbose=False)
            for prompt in PROMPTS:
                ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
                llm.reset()
                llm.eval(ids)
                logits = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
                top = np.argsort(-logits, kind="stable")[:16]
                greedy = []
                for _ in range(16):
                    t = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1])))
                    greedy.append(t)
                    llm.eval([t])
                f.write(json.dumps({"arch": arch, "shape": shape, "seed": seed, "prompt": prompt, "prompt_ids": ids,
                                    "top": [[int(i), float(logits[i])] for i in top], "greedy": greedy}) + "\n")


if __name__ == "__main__":
    main(sys.argv)
