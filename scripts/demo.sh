#!/usr/bin/env bash
# `make demo`: converts the bundled tiny models to GGUF and generates a story with the target alone,
# then speculatively with a distilled draft (chain and tree), showing that the text is identical and
# how many tokens each verification pass confirmed.
set -euo pipefail
build=${1:-build}
bin="$build/edgespec"
models=${EDGESPEC_MODELS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/models}
export EDGESPEC_MODELS=$models
out="$build/models"
"$(dirname "$0")/make-test-models.sh" "$bin" "$out" >&2
prompt="Once upon a time, there was a little girl named Lily"

echo "== target alone (stories260K, greedy) =="
"$bin" run -m "$out/stories260K.gguf" -p "$prompt" -n 120 -t 2
echo
echo "== speculative: draft-mid drafts, stories260K verifies (chain) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --spec chain -p "$prompt" -n 120 -t 2
echo
echo "== speculative: token tree (budget 24, depth 6, width 3) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --spec tree --tree-budget 24 --tree-depth 6 --tree-width 3 -p "$prompt" -n 120 -t 2
echo
echo "== sampling at temperature 1 with exact rejection sampling (seed 7) =="
"$bin" run -m "$out/stories260K.gguf" --draft "$out/draft-mid.gguf" --temp 1 --seed 7 -p "$prompt" -n 120 -t 2
