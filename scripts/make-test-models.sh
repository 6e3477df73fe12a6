#!/usr/bin/env bash
# Converts the shared models into GGUF files for the test suite (CTest fixture "models").
# usage: scripts/make-test-models.sh EDGESPEC_BIN OUTDIR
set -euo pipefail
bin=$1; out=$2
models=${EDGESPEC_MODELS:-$(dirname "$0")/../../shared/models}
mkdir -p "$out"
conv() { # name src... : convert unless up to date
  local dst="$out/$1"; shift
  if [ ! -s "$dst" ] || [ "$bin" -nt "$dst" ]; then
    "$bin" "$@" -o "$dst.tmp" && mv "$dst.tmp" "$dst"
  fi
}
conv stories260K.gguf convert llama2c "$models/stories260K.bin" "$models/tok512.bin"
conv stories260K_q80.gguf convert llama2c "$models/stories260K_q80.bin" "$models/tok512.bin"
conv draft-mid.gguf convert llama2c "$models/draft-mid.bin" "$models/tok512.bin"
conv draft-small.gguf convert llama2c "$models/draft-small.bin" "$models/tok512.bin"
conv tinystories656k.gguf convert hf "$models/TinyStories-656K"
if [ ! -s "$out/stories260K-q8_0.gguf" ] || [ "$bin" -nt "$out/stories260K-q8_0.gguf" ]; then
  "$bin" quantize "$out/stories260K.gguf" "$out/stories260K-q8_0.gguf.tmp" q8_0 && mv "$out/stories260K-q8_0.gguf.tmp" "$out/stories260K-q8_0.gguf"
fi
if [ ! -s "$out/stories260K-q4_0.gguf" ] || [ "$bin" -nt "$out/stories260K-q4_0.gguf" ]; then
  "$bin" quantize "$out/stories260K.gguf" "$out/stories260K-q4_0.gguf.tmp" q4_0 && mv "$out/stories260K-q4_0.gguf.tmp" "$out/stories260K-q4_0.gguf"
fi
# A deliberately bad draft: random weights, same vocabulary. It may only make speculation slower.
if [ ! -s "$out/draft-random.gguf" ] || [ "$bin" -nt "$out/draft-random.gguf" ]; then
  "$bin" synth --random --shape custom:dim=32,ff=64,layers=1,heads=2,kv=1,ctx=512,vocab=512 \
    --tokenizer "$models/tok512.bin" --seed 7 -o "$out/draft-random.gguf.tmp" && mv "$out/draft-random.gguf.tmp" "$out/draft-random.gguf"
fi
echo "test models ready in $out"
