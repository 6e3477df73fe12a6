#!/usr/bin/env bash
# test_chat_template_ref.sh — the jinja2 reference that test_jinja holds src/jinja/ to is what the
# pinned jinja2 (build/venv) really writes: scripts/chat-template-ref.py renders the committed
# templates, conversations and snippets again and must reproduce tests/data/chat-templates/ref.jsonl
# byte for byte (a stale or hand-edited reference fails here, not silently in test_jinja).
. "$(dirname "$0")/lib.sh"
es_test_init chat-template-ref
py=$(es_venv_python) || exit 1
src=${ES_SRC:-.}
cp "$src"/tests/data/chat-templates/*.jinja "$src"/tests/data/chat-templates/*.json "$tmp/"
"$py" "$src/scripts/chat-template-ref.py" "$tmp" >"$tmp/out" 2>"$tmp/err" && ok || bad "the generator failed: $(tail -c 400 "$tmp/err")"
cmp -s "$tmp/ref.jsonl" "$src/tests/data/chat-templates/ref.jsonl" && ok ||
  bad "jinja2's renderings differ from tests/data/chat-templates/ref.jsonl: $(diff "$tmp/ref.jsonl" "$src/tests/data/chat-templates/ref.jsonl" | head -c 600)"
[ "$(wc -l <"$tmp/ref.jsonl")" -ge 90 ] && ok || bad "too few renderings: $(wc -l <"$tmp/ref.jsonl")"
es_test_finish test_chat_template_ref
