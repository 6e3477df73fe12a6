#!/usr/bin/env bash
# test_gguf_llamacpp.sh — every kind of GGUF edgespec writes (convert llama2c, convert hf, quantize,
# synth --pad-from, synth --random) is read by llama.cpp as edgespec reads it: the prompt ids and the
# 32 greedy tokens of `edgespec run` on each file equal llama.cpp's on the same file
# (tests/data/written-gguf-llamacpp-ref.jsonl, made by scripts/gen-llamacpp-gguf-ref.py with
# llama-cpp-python on files written by these same commands:
#   gen-llamacpp-gguf-ref.py OUT.jsonl 32 llama2c=... hf=... q8_0=... synth-pad=... synth-random=...).
# Before edgespec wrote SentencePiece spaces as U+2581, llama.cpp tokenised "Once upon a time" in the
# llama2c file into 22 byte tokens instead of 5.
. "$(dirname "$0")/lib.sh"
es_test_init gguf-llamacpp
py=$(es_venv_python) || exit 1
src=${ES_SRC:-.}
models=${EDGESPEC_MODELS:-../shared/models} # the sources, not the converted test models

expect 0 "$bin" convert llama2c "$models/stories260K.bin" "$models/tok512.bin" -o "$tmp/llama2c.gguf"
expect 0 "$bin" convert hf "$models/TinyStories-656K" -o "$tmp/hf.gguf"
expect 0 "$bin" quantize "$tmp/llama2c.gguf" "$tmp/q8_0.gguf" q8_0
expect 0 "$bin" synth --pad-from "$tmp/llama2c.gguf" --shape custom:dim=256,ff=512,layers=6,heads=8,kv=4 -o "$tmp/synth-pad.gguf"
expect 0 "$bin" synth --random --shape custom:dim=64,ff=128,layers=2,heads=4,kv=2,ctx=512,vocab=512 \
  --tokenizer "$models/tok512.bin" --seed 7 -o "$tmp/synth-random.gguf"

"$py" - "$bin" "$tmp" "$src/tests/data/written-gguf-llamacpp-ref.jsonl" >"$tmp/cmp.out" 2>&1 <<'EOF'
import json, subprocess, sys
bin_, tmp, ref = sys.argv[1:4]
n = bad = 0
kinds = set()
for line in open(ref, encoding="utf-8"):
    r = json.loads(line)
    kinds.add(r["kind"])
    p = subprocess.run([bin_, "run", "-m", f"{tmp}/{r['kind']}.gguf", "-p", r["prompt"], "-n", str(len(r["ids"])),
                        "--temp", "0", "-t", "1", "--json"], capture_output=True, text=True)
    n += 1
    if p.returncode != 0:
        bad += 1
        print(f"FAIL: {r['kind']} {r['prompt']!r}: run exited {p.returncode}: {p.stderr[-300:]}")
        continue
    j = json.loads(p.stdout)
    if j["prompt_tokens"] != r["prompt_ids"]:
        bad += 1
        print(f"FAIL: {r['kind']} {r['prompt']!r}: prompt ids {j['prompt_tokens']} (llama.cpp {r['prompt_ids']})")
    elif j["tokens"] != r["ids"]:
        bad += 1
        print(f"FAIL: {r['kind']} {r['prompt']!r}: greedy {j['tokens']} (llama.cpp {r['ids']})")
print(f"{n - bad}/{n} prompts: the same prompt ids and greedy tokens as llama.cpp ({', '.join(sorted(kinds))})")
sys.exit(0 if bad == 0 and n == 20 and len(kinds) == 5 else 1)
EOF
rc=$?
cat "$tmp/cmp.out"
[ $rc -eq 0 ] && ok || bad "edgespec and llama.cpp read a written GGUF differently (see above)"
es_test_finish test_gguf_llamacpp
