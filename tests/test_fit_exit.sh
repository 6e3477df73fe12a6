#!/usr/bin/env bash
# test_fit_exit.sh — `edgespec fit-exit`: adapters fitted on stories260K's own text are written as
# exit.<L>.* tensors, the calibrated head agrees with the final layer more often than the
# zero-training one on held-out text, the run is deterministic for a seed, and usage errors exit 2.
. "$(dirname "$0")/lib.sh"
es_test_init cli-fit-exit
prompts=${ES_SHARED:-../shared}/prompts/stories.txt

expect 0 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 2,4 -o "$tmp/exits.gguf" --prompt-file "$prompts" \
  --prompts 12 --tokens 96 --json
has "$tmp/out" '"n_layer":5'
has "$tmp/out" '"layers":[{"layer":2,'
[ "$(wc -l <"$tmp/out")" -eq 1 ] && ok || bad "--json should print one line"
cp "$tmp/out" "$tmp/first.json"
# held-out agreement: calibrated above zero-training at layer 2 (6 % vs 26 % when written), and
# layer 4 above layer 2 for zero-training
python3 - "$tmp/out" <<'PY' && ok || bad "agreement figures: $(cat "$tmp/out")"
import json, sys
j = json.load(open(sys.argv[1]))
l2, l4 = j["layers"]
assert j["heldout_rows"] > 0 and j["train_rows"] > j["heldout_rows"]
for l in j["layers"]:
    assert 0 <= l["zero_top1"] <= 1 and 0 <= l["calibrated_top1"] <= 1
assert l2["calibrated_top1"] > l2["zero_top1"] + 0.05, (l2)
assert l4["zero_top1"] > l2["zero_top1"]
PY
expect 0 "$bin" info "$tmp/exits.gguf"
has "$tmp/out" 'exit.2.weight'
has "$tmp/out" 'exit.4.bias'
has "$tmp/out" 'edgespec.exit.layers'
# the same seed: the same figures
expect 0 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 2,4 -o "$tmp/exits2.gguf" --prompt-file "$prompts" \
  --prompts 12 --tokens 96 --json
sed 's|exits2.gguf|exits.gguf|' "$tmp/out" | cmp -s - "$tmp/first.json" && ok || bad "fit-exit is not deterministic"
cmp -s "$tmp/exits.gguf" "$tmp/exits2.gguf" && ok || bad "fit-exit wrote different adapters for one seed"
# plain output: a table
expect 0 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 3 -o "$tmp/e3.gguf" --prompt-file "$prompts" --prompts 4 --tokens 16
has "$tmp/out" 'zero-training'
# usage errors
expect 2 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 5 -o "$tmp/x.gguf" --prompt-file "$prompts"
has "$tmp/err" 'the model has 5 layers'
expect 2 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 2,2 -o "$tmp/x.gguf"
expect 2 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 0 -o "$tmp/x.gguf"
expect 2 "$bin" fit-exit -m "$models/stories260K.gguf" -o "$tmp/x.gguf"
expect 2 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 2 -o "$tmp/x.gguf" --prompts 1
expect 1 "$bin" fit-exit -m "$models/stories260K.gguf" --layers 2 -o "$tmp/x.gguf" --prompt-file "$tmp/none.txt"
expect 1 "$bin" fit-exit -m "$tmp/none.gguf" --layers 2 -o "$tmp/x.gguf"
expect 0 "$bin" fit-exit --help
has "$tmp/out" '--layers'

# serve with the fitted adapters: an edge that asks gets EARLY frames and the same text as one that
# does not; /metrics counts them; bad exit flags are refused before anything listens
es_reap_on_exit
model=$models/stories260K.gguf
es_serve_start "$tmp/serve.log" --exit-file "$tmp/exits.gguf" --exit-layers 2
[ -n "$eport" ] && ok || bad "serve with --exit-file did not start: $(head -c 300 "$tmp/serve.log")"
expect 0 "$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" -p "Once upon a time" -n 40 --json --early-exit
cp "$tmp/out" "$tmp/early.json"
expect 0 "$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" -p "Once upon a time" -n 40 --json
cp "$tmp/out" "$tmp/plain.json"
python3 - "$tmp/early.json" "$tmp/plain.json" <<'PY' && ok || bad "edge --early-exit: $(head -c 600 "$tmp/early.json")"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["text"] == b["text"] and a["tokens"] == b["tokens"]
ea, eb = a["early"], b["early"]
assert ea["enabled"] and ea["frames"] == a["spec"]["rounds"] > 0, ea
assert 0 <= ea["agreed"] <= ea["frames"] and 0 <= ea["kept"] <= ea["frames"] and ea["lead_ms_p50"] >= 0
assert not eb["enabled"] and eb["frames"] == 0
PY
curl -s "http://127.0.0.1:$hport/metrics" >"$tmp/metrics" && ok || bad "no /metrics"
grep -Eq '^edgespec_early_frames_total [1-9]' "$tmp/metrics" && ok || bad "early frames not counted: $(grep early "$tmp/metrics")"
has "$tmp/metrics" 'edgespec_early_agreed_total'
# both edges bet (proactive is on by default): the server counts their trees by how they were drafted
python3 - "$tmp/metrics" "$tmp/early.json" "$tmp/plain.json" <<'PY' && ok || bad "edge trees: $(grep edge_trees "$tmp/metrics")"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert "# TYPE edgespec_edge_trees_total counter" in lines and any(l.startswith("# HELP edgespec_edge_trees_total ") for l in lines)
t = {l.split('"')[1]: float(l.split()[-1]) for l in lines if l.startswith("edgespec_edge_trees_total{drafted=")}
assert set(t) == {"fresh", "bet_hit", "bet_miss", "early_hit"}, t
rounds = sum(json.load(open(p))["spec"]["rounds"] for p in sys.argv[2:4])
assert sum(t.values()) == rounds and t["bet_hit"] + t["bet_miss"] + t["early_hit"] > 0, (t, rounds)
PY
kill -INT "$pid"
wait "$pid" 2>/dev/null
expect 1 "$bin" serve -m "$model" --port 0 --exit-layers 5
has "$tmp/err" 'exit layer 5'
expect 1 "$bin" serve -m "$model" --port 0 --exit-file "$model"
has "$tmp/err" 'no exit.<L>.weight tensors'
expect 2 "$bin" serve -m "$model" --port 0 --exit-layers 2,x
es_test_finish test_fit_exit
