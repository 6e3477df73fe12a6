#!/usr/bin/env bash
# test_chat_page.sh — the chat page at GET / of both HTTP APIs, in headless Chromium (Debian's
# chromium, scripts/install-deps.sh): the server (with server-side drafting) and the edge-local API
# each serve the page; tests/chat_page_cdp.py loads it, sends a message, and waits for the page's
# "chat-done" event (fired when the stream ends: no fixed sleeps); the finished reply is in the DOM,
# its text coloured as drafted-and-accepted and target spans, with the acceptance length and tokens/s
# shown; a screenshot is taken. Chromium missing or unable to start fails the test (it never skips).
. "$(dirname "$0")/lib.sh"
es_test_init chat-page
model=$models/stories260K.gguf
draft=$models/draft-small.gguf
here=$(cd "$(dirname "$0")" && pwd)
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "FAIL: test_chat_page: chromium is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "test_chat_page: curl is required" >&2; exit 1; }
es_reap_on_exit

# check_page PORT NAME: the page, driven in Chromium, shows a finished reply with both colours
check_page() {
  local port=$1 name=$2
  code=$(curl -s -o "$tmp/$name.html" -w '%{http_code} %{content_type}' "http://127.0.0.1:$port/")
  [ "$code" = "200 text/html; charset=utf-8" ] && ok || bad "$name: GET / answered '$code'"
  has "$tmp/$name.html" 'id="form"'
  if ! python3 "$here/chat_page_cdp.py" "$chromium" "http://127.0.0.1:$port/" "Once upon a time" "$tmp/$name.png" \
    >"$tmp/$name.json" 2>"$tmp/$name.err"; then
    bad "$name: Chromium could not drive the page: $(tail -c 600 "$tmp/$name.err")"
    return
  fi
  python3 - "$tmp/$name.json" "$tmp/$name.png" <<'PY' && ok || bad "$name: the page's DOM: $(head -c 800 "$tmp/$name.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["event_state"] == "done" and d["state"] == "done" and d["done"] and d["error"] is None, d
assert d["user"] == "Once upon a time" and len(d["reply"].strip()) > 0, d
assert d["target_spans"] > 0 and d["draft_spans"] > 0, d  # greedy with a matching draft: some steps accept drafts
assert "acceptance length" in d["stats"] and "tokens/s" in d["stats"], d
assert d["model"], d
assert open(sys.argv[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
PY
}

es_serve_start "$tmp/serve.log" --draft "$draft"
[ -n "$hport" ] || { bad "serve did not start: $(tail -n 5 "$tmp/serve.log")"; es_test_finish test_chat_page; exit; }
check_page "$hport" server
# HEAD and /index.html serve it too; it needs no API key (the page asks for one itself)
code=$(curl -s -I -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/index.html")
[ "$code" = 200 ] && ok || bad "HEAD /index.html: $code"

"$bin" edge -d "$draft" --server "127.0.0.1:$eport" --listen 127.0.0.1:0 --parallel 1 -t 1 >"$tmp/edge.out" 2>"$tmp/edge.log" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.log" "$epid" "$ES_RE_HTTP")
[ -n "$lport" ] || { bad "edge --listen did not start: $(head -c 400 "$tmp/edge.log")"; es_test_finish test_chat_page; exit; }
check_page "$lport" edge

es_test_finish test_chat_page
