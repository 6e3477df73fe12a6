#!/usr/bin/env bash
# test_convert_cli.sh — the convert / quantize / synth subcommands: the forms scripts/make-test-models.sh
# uses, --json output, --help, and exit codes (0 ok, 1 runtime error, 2 usage error).
. "$(dirname "$0")/lib.sh"
es_test_init cli-convert
models=${EDGESPEC_MODELS:-$es_root/../shared/models} # the sources, not the converted test models

expect 0 "$bin" convert llama2c "$models/stories260K.bin" "$models/tok512.bin" -o "$tmp/s.gguf" --json
has "$tmp/out" '"arch":"llama"'
has "$tmp/out" '"n_tensors":47'
has "$tmp/out" "\"output\":\"$tmp/s.gguf\""
has "$tmp/out" '"n_params":'
has "$tmp/out" '"seconds":'
[ "$(wc -l <"$tmp/out")" -eq 1 ] && ok || bad "--json should print one line"
# the vocabulary is written as GGUF's convention says (spaces as U+2581, what llama.cpp reads) and
# encodes the golden prompt as llama2.c does
expect 0 "$bin" tokenize -m "$tmp/s.gguf" -p "Once upon a time" --ids
[ "$(cat "$tmp/out")" = "1 403 407 261 378" ] && ok || bad "converted llama2c vocabulary: $(cat "$tmp/out")"
expect 0 "$bin" tokenize -m "$tmp/s.gguf" -p "Once upon a time" --json --no-bos
has "$tmp/out" '"pieces":[" Once"," upon"," a"," time"]'
"$(es_venv_python)" -c "
import sys
from gguf import GGUFReader
f = GGUFReader(sys.argv[1]).fields['tokenizer.ggml.tokens']
toks = [bytes(f.parts[i]).decode() for i in f.data]
sys.exit(0 if toks[403] == '\u2581Once' and not any(' ' in t for t in toks) else 1)" "$tmp/s.gguf" && ok ||
  bad "convert llama2c must write U+2581 for spaces (GGUF's convention)"
expect 0 "$bin" convert llama2c "$models/stories260K_q80.bin" "$models/tok512.bin" -o "$tmp/q80.gguf" --type q4_0
has "$tmp/err" "wrote $tmp/q80.gguf"
expect 0 "$bin" convert hf "$models/TinyStories-656K" -o "$tmp/hf.gguf" --json --type f16
has "$tmp/out" '"n_tensors":20'

expect 0 "$bin" quantize "$tmp/s.gguf" "$tmp/s-q8.gguf" q8_0 --json
has "$tmp/out" '"n_converted":31'
has "$tmp/out" '"type":"q8_0"'
has "$tmp/out" '"n_tensors":47'
has "$tmp/err" "kept f32"
expect 0 "$bin" quantize "$tmp/s.gguf" "$tmp/s-q4.gguf" q4_0
# K-quants: stories260K's rows (64, 172) are no whole 256-element super-blocks, so q4_k_m writes the
# 32-block stand-ins (q4_0 for q4_k, q8_0 for q6_k) and f32 where even those do not fit
expect 0 "$bin" quantize "$tmp/s.gguf" "$tmp/s-q4km.gguf" q4_k_m --json
has "$tmp/out" '"type":"q4_k_m"'
has "$tmp/out" '"n_converted":31'
# padded to dim 256 / ff 512 every matrix is a real K-quant; greedy text must start like the f32 model's
expect 0 "$bin" synth --pad-from "$tmp/s.gguf" --shape custom:dim=256,ff=512,layers=6,heads=8,kv=4 -o "$tmp/p256.gguf"
expect 0 "$bin" quantize "$tmp/p256.gguf" "$tmp/p256-q4km.gguf" q4_k_m
has "$tmp/err" "0 matrices kept f32"
expect 0 "$bin" run -m "$tmp/p256.gguf" -p "Once upon a time" -n 24 -t 1 --temp 0
head -c 40 "$tmp/out" >"$tmp/f32.head"
expect 0 "$bin" run -m "$tmp/p256-q4km.gguf" -p "Once upon a time" -n 24 -t 2 --temp 0
head -c 40 "$tmp/out" >"$tmp/q4km.head"
cmp -s "$tmp/f32.head" "$tmp/q4km.head" && ok || bad "q4_k_m greedy text starts differently: $(cat "$tmp/q4km.head") vs $(cat "$tmp/f32.head")"
grep -q "little girl" "$tmp/q4km.head" && ok || bad "q4_k_m greedy text: $(cat "$tmp/q4km.head")"

expect 0 "$bin" synth --random --shape custom:dim=64,ff=128,layers=2,heads=4,kv=2,vocab=300 --type q8_0 -o "$tmp/r.gguf" --json
has "$tmp/out" '"mode":"random"'
has "$tmp/out" '"n_tensors":20'
expect 0 "$bin" synth --pad-from "$tmp/s.gguf" --shape custom:dim=128,ff=256,layers=6,heads=8,kv=4 -o "$tmp/p.gguf" --json --noise 0.001
has "$tmp/out" '"mode":"pad"'

for c in convert quantize synth; do
  expect 0 "$bin" $c --help
  has "$tmp/out" "usage:"
done

# usage errors: 2
expect 2 "$bin" convert llama2c "$models/stories260K.bin" "$models/tok512.bin"
expect 2 "$bin" convert llama2c "$models/stories260K.bin" -o "$tmp/x.gguf"
expect 2 "$bin" convert onnx foo -o "$tmp/x.gguf"
expect 2 "$bin" convert llama2c "$models/stories260K.bin" "$models/tok512.bin" -o "$tmp/x.gguf" --type q3_k
expect 2 "$bin" convert llama2c "$models/stories260K.bin" "$models/tok512.bin" -o "$tmp/x.gguf" --bogus
expect 2 "$bin" convert
expect 2 "$bin" quantize "$tmp/s.gguf" "$tmp/x.gguf"
expect 2 "$bin" quantize "$tmp/s.gguf" "$tmp/x.gguf" q3_k
expect 2 "$bin" quantize "$tmp/s.gguf" "$tmp/x.gguf" q5_k_m
expect 2 "$bin" synth --random --pad-from "$tmp/s.gguf" --shape stories15m -o "$tmp/x.gguf"
expect 2 "$bin" synth --random -o "$tmp/x.gguf"
expect 2 "$bin" synth --random --shape nonsense -o "$tmp/x.gguf"
has "$tmp/err" "unknown shape"
expect 2 "$bin" synth --random --shape stories15m
expect 2 "$bin" synth --pad-from "$tmp/s.gguf" --shape custom:dim=32,ff=256,layers=6,heads=8,kv=4 -o "$tmp/x.gguf"

# runtime errors: 1, with the reason
expect 1 "$bin" convert llama2c "$tmp/missing.bin" "$models/tok512.bin" -o "$tmp/x.gguf"
has "$tmp/err" "missing.bin"
head -c 1056000 "$models/stories260K.bin" >"$tmp/trunc.bin"
expect 1 "$bin" convert llama2c "$tmp/trunc.bin" "$models/tok512.bin" -o "$tmp/x.gguf"
has "$tmp/err" "file is 1056000 bytes but a model of this shape needs 1056540"
expect 1 "$bin" convert hf "$tmp" -o "$tmp/x.gguf"
expect 1 "$bin" quantize "$tmp/missing.gguf" "$tmp/x.gguf" q8_0

es_test_finish test_convert_cli
