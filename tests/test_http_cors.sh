#!/usr/bin/env bash
# test_http_cors.sh — `serve --cors ORIGINS` and `edge --cors ORIGINS`: browser pages from the listed
# origins may call the API.
#  - replies (plain, streamed, errors — a 401 too) to an allowed Origin carry
#    Access-Control-Allow-Origin (the origin itself, with Vary: Origin; or * with --cors '*');
#    other origins get none;
#  - an OPTIONS preflight is answered 204 with the allowed methods, the headers asked for and a
#    max-age, before any api key check; on an unknown path it is still 404;
#  - without --cors: no CORS header, and OPTIONS is 405 as before.
. "$(dirname "$0")/lib.sh"
es_test_init http-cors
model=$models/stories260K.gguf
draft=$models/draft-small.gguf
command -v curl >/dev/null || { echo "test_http_cors: curl is required" >&2; exit 1; }
es_reap_on_exit

# hdr NAME FILE: the value of header NAME in a curl -D dump (case-insensitive), CR stripped
hdr() { awk -v n="$(printf %s "$1" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} { k = tolower($1) } k == n { sub(/\r$/, "", $2); print $2; exit }' "$2"; }
# call NAME ARGS...: curl with headers in $tmp/NAME.hdr, body in $tmp/NAME.body; prints the status
call() { local n=$1; shift; curl -s -D "$tmp/$n.hdr" -o "$tmp/$n.body" -w '%{http_code}' "$@"; }
same() { if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2' want '$3'"; fi; }

es_serve_start "$tmp/s1" --cors "http://a.example, http://b.example:8080" --api-key k1
[ -n "$hport" ] || { bad "serve did not start: $(head -c 400 "$tmp/s1")"; es_test_finish test_http_cors; exit; }
u=http://127.0.0.1:$hport
A=(-H "Authorization: Bearer k1")

same "allowed origin, GET" "$(call g1 "${A[@]}" -H "Origin: http://a.example" "$u/v1/models")" 200
same "allow-origin echoes the origin" "$(hdr Access-Control-Allow-Origin "$tmp/g1.hdr")" "http://a.example"
same "vary" "$(hdr Vary "$tmp/g1.hdr")" "Origin"
same "second origin of the list (space after the comma)" "$(call g2 "${A[@]}" -H "Origin: http://b.example:8080" "$u/v1/models")" 200
same "allow-origin of the second" "$(hdr Access-Control-Allow-Origin "$tmp/g2.hdr")" "http://b.example:8080"
call g3 "${A[@]}" -H "Origin: http://evil.example" "$u/v1/models" >/dev/null
same "other origin: no allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/g3.hdr")" ""
call g4 "${A[@]}" -H "Origin: http://a.exampl" "$u/v1/models" >/dev/null
same "a prefix of an allowed origin is not allowed" "$(hdr Access-Control-Allow-Origin "$tmp/g4.hdr")" ""
# an error reply to a page must be readable by it too (else it cannot tell 401 from a network error)
same "401 with CORS" "$(call e1 -H "Origin: http://a.example" -d '{"prompt":"x"}' "$u/v1/completions")" 401
same "401's allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/e1.hdr")" "http://a.example"
# preflight: no api key needed, 204, what the browser asked for
same "preflight" "$(call p1 -X OPTIONS -H "Origin: http://a.example" -H "Access-Control-Request-Method: POST" \
  -H "Access-Control-Request-Headers: authorization, content-type" "$u/v1/chat/completions")" 204
same "preflight allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/p1.hdr")" "http://a.example"
case "$(hdr Access-Control-Allow-Methods "$tmp/p1.hdr")" in *POST*) ok ;; *) bad "preflight methods: $(cat "$tmp/p1.hdr")" ;; esac
same "preflight headers" "$(hdr Access-Control-Allow-Headers "$tmp/p1.hdr")" "authorization, content-type"
[ -n "$(hdr Access-Control-Max-Age "$tmp/p1.hdr")" ] && ok || bad "preflight without max-age"
same "preflight, route without /v1" "$(call p2 -X OPTIONS -H "Origin: http://a.example" -H "Access-Control-Request-Method: POST" "$u/completions")" 204
same "preflight, unknown path" "$(call p3 -X OPTIONS -H "Origin: http://a.example" -H "Access-Control-Request-Method: POST" "$u/nothing")" 404
call p4 -X OPTIONS -H "Origin: http://evil.example" -H "Access-Control-Request-Method: POST" "$u/v1/completions" >/dev/null
same "preflight of another origin: no allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/p4.hdr")" ""
# a completion, plain and streamed
same "completion" "$(call c1 "${A[@]}" -H "Origin: http://a.example" -d '{"prompt":"Once","max_tokens":3}' "$u/v1/completions")" 200
same "completion allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/c1.hdr")" "http://a.example"
same "stream" "$(call c2 "${A[@]}" -H "Origin: http://a.example" -d '{"prompt":"Once","max_tokens":3,"stream":true}' "$u/v1/completions")" 200
same "stream allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/c2.hdr")" "http://a.example"
grep -q '^data: \[DONE\]' "$tmp/c2.body" && ok || bad "stream incomplete: $(head -c 300 "$tmp/c2.body")"
sport=$eport

# ---- the edge-local API with --cors '*' ----
"$bin" edge -d "$draft" --server "127.0.0.1:$sport" --api-key k1 --listen 127.0.0.1:0 --parallel 1 --cors '*' -t 1 \
  >"$tmp/edge.out" 2>"$tmp/edge.err" &
epid=$!
pids+=("$epid")
lport=$(wait_line "$tmp/edge.err" "$epid" "$ES_RE_HTTP")
if [ -n "$lport" ]; then
  l=http://127.0.0.1:$lport
  same "edge: any origin" "$(call x1 -H "Origin: http://anything.example" "$l/v1/models")" 200
  same "edge: allow-origin *" "$(hdr Access-Control-Allow-Origin "$tmp/x1.hdr")" "*"
  same "edge: preflight" "$(call x2 -X OPTIONS -H "Origin: http://z.example" -H "Access-Control-Request-Method: POST" "$l/v1/chat/completions")" 204
  same "edge: preflight allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/x2.hdr")" "*"
  same "edge: completion" "$(call x3 -H "Origin: http://z.example" -d '{"prompt":"Once","max_tokens":3}' "$l/v1/completions")" 200
  same "edge: completion allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/x3.hdr")" "*"
else
  bad "edge --listen did not start: $(head -c 400 "$tmp/edge.err")"
fi
kill -TERM "$epid"; wait "$epid" 2>/dev/null
kill -TERM "$pid"; wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly: $(tail -c 300 "$tmp/s1")"

# ---- off by default ----
es_serve_start "$tmp/s2"
u=http://127.0.0.1:$hport
call n1 -H "Origin: http://a.example" "$u/v1/models" >/dev/null
same "no --cors: no allow-origin" "$(hdr Access-Control-Allow-Origin "$tmp/n1.hdr")" ""
same "no --cors: OPTIONS is 405" "$(call n2 -X OPTIONS -H "Origin: http://a.example" -H "Access-Control-Request-Method: POST" "$u/v1/completions")" 405
kill -TERM "$pid"; wait "$pid"

expect 2 "$bin" serve -m "$model" --cors ""
es_test_finish test_http_cors
