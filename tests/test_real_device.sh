#!/usr/bin/env bash
# test_real_device.sh — the real Qwen2.5-Coder 1.5B target (Q4_K_M: Q4_K and Q6_K weights, q/k/v
# biases, NEOX RoPE, grouped-query heads, a 151936-row output matrix that lavapipe's 128 MiB binding
# limit splits in two) on the Vulkan device, under the validation layer: greedy tokens equal the CPU's
# with an f32 KV cache. On lavapipe a token takes seconds, so only a few. CTest label `real`; exits 77
# (skipped) when the model is not cached (make models-real) or the build has no Vulkan backend.
. "$(dirname "$0")/lib.sh"
es_test_init real-device
cache=${EDGESPEC_CACHE:-$HOME/.cache/edgespec/models}
target=$cache/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
if [ ! -r "$target" ]; then
  echo "test_real_device: SKIPPED: the real target is not in $cache (make models-real fetches it)"
  exit 77
fi
expect 0 "$bin" devices --json
if grep -qF "built without Vulkan" "$tmp/out"; then
  echo "test_real_device: SKIPPED: this build has no Vulkan backend"
  exit 77
fi
export EDGESPEC_VK_VALIDATION=1
tokens() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$1"; }

expect 0 "$bin" run -m "$target" -p "def fib(n):" -n 3 --temp 0 --kv-type f32 -c 128 -b 16 --json
cp "$tmp/out" "$tmp/cpu.json"
expect 0 "$bin" run -m "$target" -p "def fib(n):" -n 3 --temp 0 --kv-type f32 -c 128 -b 16 --device vulkan --json
cp "$tmp/out" "$tmp/dev.json"
if grep -q "vulkan validation" "$tmp/err"; then bad "validation messages: $(grep -m 3 "vulkan validation" "$tmp/err")"; else ok; fi
[ "$(tokens "$tmp/cpu.json")" = "$(tokens "$tmp/dev.json")" ] && ok ||
  bad "real target on the device: $(tokens "$tmp/dev.json") != cpu $(tokens "$tmp/cpu.json")"

es_test_finish test_real_device
