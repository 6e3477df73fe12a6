#!/usr/bin/env bash
# `make bench`: measures the engine and speculative decoding on this machine, side by side in one
# run, and writes JSON lines to build/bench/results.jsonl (plus a readable log on stderr).
#   BENCH_SHAPES="tinyllama-1.1b"   synthetic shapes to measure (random weights, like vLLM's dummy load)
#   BENCH_TYPES="q8_0 q4_0"         weight types
#   BENCH_THREADS=2
set -euo pipefail
build=${1:-build}
bin="$build/edgespec"
models=${EDGESPEC_MODELS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/models}
export EDGESPEC_MODELS=$models
threads=${BENCH_THREADS:-2}
shapes=${BENCH_SHAPES:-tinyllama-1.1b}
types=${BENCH_TYPES:-q8_0 q4_0}
out="$build/bench"; mkdir -p "$out"
res="$out/results.jsonl"; : > "$res"
"$(dirname "$0")/make-test-models.sh" "$bin" "$build/models" >&2
m="$build/models"

echo "== engine: stories260K ==" >&2
"$bin" bench -m "$m/stories260K.gguf" -t "$threads" --json | tee -a "$res"
for shape in $shapes; do
  for t in $types; do
    f="$out/$shape-$t.gguf"
    [ -s "$f" ] || "$bin" synth --random --shape "$shape" --type "$t" -o "$f" >&2
    echo "== engine: $shape $t (random weights) ==" >&2
    # pp512 / tg128 like llama-bench's defaults, so the report can compare
    "$bin" bench -m "$f" -t "$threads" --n-prompt 512 --n-gen 128 --json | tee -a "$res"
  done
done

echo "== speculative: stories260K with each shared draft ==" >&2
"$bin" bench spec -m "$m/stories260K.gguf" --draft "$m/stories260K_q80.gguf,$m/draft-mid.gguf,$m/draft-small.gguf" \
  -t "$threads" --n-gen 128 --n-prompts 8 --json | tee -a "$res"

pad="$out/stories260K-pad-tinyllama-q8_0.gguf"
[ -s "$pad" ] || "$bin" synth --pad-from "$m/stories260K.gguf" --shape tinyllama-1.1b --type q8_0 -o "$pad" >&2
echo "== speculative: padded stories260K at TinyLlama-1.1B cost (Q8_0) ==" >&2
"$bin" bench spec -m "$pad" --draft "$m/stories260K.gguf,$m/draft-mid.gguf,$m/draft-small.gguf" \
  -t "$threads" --n-gen 64 --n-prompts 4 --json | tee -a "$res"

for shape in $shapes; do
  f="$out/$shape-q8_0.gguf"
  d="$out/stories15m-q8_0.gguf"
  [ -s "$d" ] || "$bin" synth --random --shape stories15m --type q8_0 -o "$d" >&2
  echo "== speculative: synthetic acceptance 0.6 / 0.8 on $shape (random weights) ==" >&2
  "$bin" bench spec -m "$f" --draft "$d" --synthetic 0.6,0.8 -t "$threads" --n-gen 64 --n-prompts 2 --json | tee -a "$res"
done
echo "results in $res" >&2
if command -v node >/dev/null; then
  node "$(dirname "$0")/bench-report.mjs" "$res" | tee "$out/report.md"
  echo "report in $out/report.md" >&2
fi
