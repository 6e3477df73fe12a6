#!/usr/bin/env python3
"""gen-qwen2-tokenizer-ref.py — writes the reference encodings that tests/test_real.c checks edgespec's
Qwen2 tokenizer against: Hugging Face's `tokenizers` (pinned in scripts/requirements-test.txt, in
build/venv) with a tokenizer rebuilt from the GGUF's own vocabulary and merges the way Qwen2.5's
tokenizer.json defines it (NFC normalizer; Split on the qwen2 regex, isolated; ByteLevel without its
own regex; BPE; the added tokens of the vocabulary), on strings generated from a fixed seed: code,
Unicode of many scripts, emoji, digit runs, contractions, whitespace runs, random code points.

Usage:
  build/venv/bin/python scripts/gen-qwen2-tokenizer-ref.py MODEL.gguf OUT.jsonl [N]

Output: one JSON object per line, {"text": ..., "ids": [...]} (encode() with add_special_tokens, which
adds nothing for Qwen2). Every text is NFC already (edgespec assumes normalised input, as llama.cpp
does), so the normalizer changes none of them; the script checks that."""
import json
import random
import sys
import unicodedata

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# Qwen2's Split pattern (tokenizer.json of Qwen2 / Qwen2.5): llama-bpe's with \p{N} one digit a piece
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
            r"|\s+(?!\S)|\s+")

CODE = [
    "def fibonacci(n):", "    if n < 2:", "        return n", "    return fibonacci(n - 1) + fibonacci(n - 2)",
    "for (int i = 0; i < n; i++) {", "    sum += a[i] * b[i];", "}", "#include <stdio.h>",
    "int main(int argc, char **argv) { return 0; }", "const x = await fetch(`/api/v1/items?id=${id}`);",
    "fn main() -> Result<(), Box<dyn Error>> {", "    let v: Vec<u32> = (0..10).collect();",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;", "if [ -z \"$HOME\" ]; then exit 1; fi",
    "class Node:\n    def __init__(self, val=None):\n        self.val = val", "x = [i**2 for i in range(100) if i % 3 == 0]",
    "import numpy as np\nimport pandas as pd", "df.groupby('col').agg({'x': 'mean'})", "print(f\"{name!r:>10}\")",
    "// TODO: handle the error case", "/* multi-line\n * comment */", "<div class=\"main\"><p>Hello</p></div>",
    "{\"key\": [1, 2.5, -3e10, null, true]}", "a := make(map[string]int)", "ptr->next = NULL;",
    "lambda x, y: x if x > y else y", "assert len(xs) == 0, 'empty'", "return $this->db->query($sql);",
    "try:\n\tpass\nexcept Exception as e:\n\traise", "std::vector<std::pair<int, int>> edges;",
    "@decorator(arg=1)", "x += 1; y -= 2; z *= 3; w /= 4; q %= 5", "0x1F 0b1010 0o777 1_000_000 3.14e-10",
    "git commit -m \"fix: off-by-one\"", "path = r'C:\\Users\\name\\file.txt'", "s = '''triple'''",
    "while (!done && count-- > 0) ;", "#!/usr/bin/env python3", "export PATH=$PATH:/usr/local/bin",
]
WORDS = [
    "hello", "world", "The", "quick", "brown", "fox", "I'm", "you're", "they've", "we'll", "she'd", "IT'S",
    "DON'T", "Can't", "naïve", "café", "Zürich", "jalapeño", "straße", "Ærøskøbing", "résumé",
    "日本語", "中文文本", "漢字", "こんにちは", "カタカナ", "한국어", "안녕하세요", "русский", "Привет", "Ελληνικά",
    "العربية", "مرحبا", "עברית", "שלום", "हिन्दी", "नमस्ते", "ภาษาไทย", "Tiếng Việt", "ქართული", "Հայերեն",
    "🙂", "🐱", "🎉🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "∑", "∫dx", "√2", "π≈3.14", "x²+y²", "½", "€5", "£3", "¥100",
    "™", "©", "…", "—", "–", "«quoted»", "„Zitat“", "¿Qué?", "¡Hola!", "ℕ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u200b", "\u00ad",
]
SPACES = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "\n ", "\u00a0",
          "\u3000", "\u2009", " \t ", "\n    ", "\n\t"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+|\\/") + ["...", "!!", "?!", "->", "=>", "::", "==", "!=", "<=", "//", "/*"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
RANGES = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
          (0xe00, 0xe7f), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0x1f300, 0x1f6ff), (0x2000, 0x206f),
          (0xe000, 0xe0ff), (0x10000, 0x1007f)]


def piece(rng):
    k = rng.random()
    if k < 0.30:
        return rng.choice(CODE)
    if k < 0.55:
        return rng.choice(WORDS)
    if k < 0.70:
        return rng.choice(SPACES)
    if k < 0.80:
        return rng.choice(PUNCT)
    if k < 0.90:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
    lo, hi = rng.choice(RANGES)
    cps = [rng.randint(lo, hi) for _ in range(rng.randint(1, 6))]
    return "".join(chr(c) for c in cps if not 0xd800 <= c <= 0xdfff)


def texts(n, seed=15):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = "".join(piece(rng) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.03:
            s = rng.choice(SPECIAL) + s + rng.choice(SPECIAL)
        s = unicodedata.normalize("NFC", s)
        if s:
            out.append(s)
    return out


def build(model):
    r = GGUFReader(model)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    assert r.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    # the BPE model holds the ordinary tokens (type 1); control (3) and user-defined (4) ones are added
    # tokens, as in tokenizer.json; unused padding slots (5) are in neither
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == 1}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], byte_fallback=False,
                     ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    added = [(i, t) for i, t in enumerate(tokens) if types[i] in (3, 4)]
    assert [i for i, _ in added] == list(range(added[0][0], added[0][0] + len(added))), "added tokens not contiguous"
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t in added])
    for i, t in added:
        assert tok.token_to_id(t) == i, (t, i, tok.token_to_id(t))
    return tok


def main(argv):
    if len(argv) not in (3, 4):
        print("usage: gen-qwen2-tokenizer-ref.py MODEL.gguf OUT.jsonl [N]", file=sys.stderr)
        return 2
    tok = build(argv[1])
    n = int(argv[3]) if len(argv) == 4 else 3000
    with open(argv[2], "w", encoding="utf-8") as f:
        for text in texts(n):
            assert unicodedata.normalize("NFC", text) == text
            enc = tok.encode(text, add_special_tokens=True)
            assert tok.decode(enc.ids, skip_special_tokens=False) == text, repr(text)
            f.write(json.dumps({"text": text, "ids": enc.ids}, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {n} encodings to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
