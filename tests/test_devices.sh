#!/usr/bin/env bash
# test_devices.sh — `edgespec devices [--json]`: the CPU first, then every Vulkan device with its name,
# memory, subgroup size and features (lavapipe in CI). A build with Vulkan that sees no device fails;
# only a build configured without Vulkan (-DES_VULKAN=OFF) has nothing to check (exit 77, skipped).
. "$(dirname "$0")/lib.sh"
es_test_init devices

expect 0 "$bin" devices --json
cp "$tmp/out" "$tmp/devices.json"
if grep -qF "built without Vulkan" "$tmp/devices.json"; then
  echo "test_devices: this build has no Vulkan backend: nothing to check" >&2
  exit 77
fi
python3 - "$tmp/devices.json" <<'PY' >"$tmp/py.err" 2>&1 || bad "devices --json: $(cat "$tmp/py.err")"
import json, sys
d = json.load(open(sys.argv[1]))
devs = d["devices"]
assert devs[0]["backend"] == "cpu" and devs[0]["memory_bytes"] > 0, devs[0]
vk = [x for x in devs if x["backend"] == "vulkan"]
assert vk, "no Vulkan device listed (%s); CI runs on lavapipe (mesa-vulkan-drivers)" % d.get("vulkan_error", "")
for i, x in enumerate(vk):
    assert x["index"] == i, x
    assert isinstance(x["name"], str) and x["name"], x
    assert x["memory_bytes"] > 0 and x["subgroup_size"] >= 1 and x["max_storage_buffer_range"] > 0, x
    assert isinstance(x["features"], list) and all(isinstance(f, str) for f in x["features"]), x
PY
ok
expect 0 "$bin" devices
has "$tmp/out" "vulkan:0"
has "$tmp/out" "cpu"
expect 2 "$bin" devices --bogus
has "$tmp/err" "unknown option"

es_test_finish test_devices
