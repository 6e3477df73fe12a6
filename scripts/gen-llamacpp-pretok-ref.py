#!/usr/bin/env python3
"""gen-llamacpp-pretok-ref.py — llama.cpp's token ids for strings under each byte-level BPE
pre-tokenizer, including the families that have no test vocabulary of their own: GPT-2's vocabulary
(ggml-vocab-gpt-2.gguf of ../shared/tokenizer-tests) read with tokenizer.ggml.pre overridden to each
name (llama.cpp's kv_overrides), so the splits differ and the merges stay GPT-2's. The strings: the 46
of the test vectors and random ones (letters of many scripts and cases, marks, digits of several
scripts, emoji, white space of every kind, contractions, code). tests/test_tokenizer_llamacpp.c
holds edgespec to these ids with the same vocabulary and pre-tokenizer names.

Needs llama-cpp-python (scripts/requirements-llamacpp.txt): a development tool, only its output is
committed.

Usage: python scripts/gen-llamacpp-pretok-ref.py SHARED_TOKENIZER_TESTS_DIR OUT.jsonl [N_RANDOM]
Output: one {"pre": ..., "text": ..., "ids": [...]} per line (no BOS, special text not parsed)."""
import json
import random
import sys

from llama_cpp import Llama

PRES = ["gpt-2", "llama-bpe", "qwen2", "deepseek-v3", "smollm", "command-r", "gpt-4o", "starcoder", "falcon",
        "default", "deepseek-coder", "deepseek-llm", "dbrx", "llama4"]

ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + [
    " ", " ", " ", " ", "\t", "\n", "\n", "\r", "'", "'", ".", ",", "!", "?", "-", '"', "(", ")", "$", "_", "~", "`", "|",
    "/", "+", "<", "=", ">", "^", "@", "#", "[", "]", "{", "}", ":", ";", "*", "&", "%", "\\",
    "é", "É", "ß", "ä", "Ä", "ж", "Ж", "λ", "Λ", "Ω", "ǅ", "ʰ", "日", "本", "中", "龥", "か", "ひ", "ア", "ー", "한", "가",
    "ࠀ", "ก", "ि", "क", "्", "ष", "\u0301", "\u0903", "\u200d", "\u200b", "\ufeff", "😀", "🎉", "🦙", "👍🏽",
    "²", "½", "٣", "Ⅷ", "٠", "１", "£", "€", "©", "—", "“", "”", "‘", "’", "…", "：", "、", "。", "！", "Ａ", "ｚ",
    "\u00a0", "\u3000", "\u2003", "\u2028", "\u1680", "\u0085", "\u000b", "\u000c",
]
WORDS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", " the", "  ", "\r\n", " 123", "12345",
         "...", "Hello", "WORLD", "camelCase", "HTTPServer", "ÀB", "ÉCOLE", "naïve", "3.14", "1000000", "  \n",
         "\t\t", "def f(x):\n    return x", "int main() { return 0; }", "// TODO", "ヒラガナ", "漢字かな",
         "Привет мир", "Ελληνικά", "नमस्ते", "สวัสดี", "안녕하세요"]


def random_strings(n, seed=20261206):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = 1 + rng.randrange(32)
        out.append("".join(rng.choice(WORDS) if rng.randrange(4) == 0 else rng.choice(ALPHABET) for _ in range(k)))
    return out


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    vocab = argv[1] + "/ggml-vocab-gpt-2.gguf"
    texts = open(vocab + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")[:-1]
    texts += random_strings(int(argv[3]) if len(argv) == 4 else 200)  # 200: the reference stays under 1 MiB
    n = 0
    with open(argv[2], "w", encoding="utf-8") as f:
        for pre in PRES:
            llm = Llama(model_path=vocab, vocab_only=True, verbose=False, kv_overrides={"tokenizer.ggml.pre": pre})
            for t in texts:
                ids = llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
                f.write(json.dumps({"pre": pre, "text": t, "ids": ids}, ensure_ascii=False) + "\n")
                n += 1
            del llm
    print(f"wrote {n} encodings to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
