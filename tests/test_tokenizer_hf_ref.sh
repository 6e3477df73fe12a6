#!/usr/bin/env bash
# test_tokenizer_hf_ref.sh — the Hugging Face reference that test_tokenizer checks edgespec against is
# what Hugging Face's `tokenizers` (pinned, build/venv) really writes: scripts/gen-hf-tokenizer-ref.py
# regenerates it from TinyStories-656K's tokenizer.json and must reproduce the committed file byte for
# byte (a stale or hand-edited reference fails here, not silently in test_tokenizer).
. "$(dirname "$0")/lib.sh"
es_test_init tokenizer-hf-ref
py=$(es_venv_python) || exit 1
src=${ES_SRC:-.}
shared=${ES_SHARED:-../shared}
"$py" "$src/scripts/gen-hf-tokenizer-ref.py" "$shared/models/TinyStories-656K" "$shared/prompts/stories.txt" "$tmp/ref.jsonl" \
  >"$tmp/out" 2>"$tmp/err" && ok || bad "the generator failed: $(tail -c 400 "$tmp/err")"
cmp -s "$tmp/ref.jsonl" "$src/tests/data/tinystories656k-tokenizer-ref.jsonl" && ok ||
  bad "tokenizers' encodings differ from tests/data/tinystories656k-tokenizer-ref.jsonl: $(diff "$tmp/ref.jsonl" "$src/tests/data/tinystories656k-tokenizer-ref.jsonl" | head -c 600)"
[ "$(wc -l <"$tmp/ref.jsonl")" -gt 50 ] && ok || bad "too few encodings: $(wc -l <"$tmp/ref.jsonl")"
es_test_finish test_tokenizer_hf_ref
