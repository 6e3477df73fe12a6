#!/usr/bin/env bash
# test_serve_drain.sh — `serve --drain-timeout S` on SIGTERM: /health turns 503 "draining" (a load
# balancer's health check takes the replica out), new HTTP completions get 503 `draining` with
# Retry-After, a new edge session is refused with a SHUTDOWN error (edges reconnect, through a balancer
# elsewhere), the sessions already running keep the server up until they end, then it exits 0 by
# itself; past the deadline the rest are told to move and it exits 0 too. A running stream is held by
# the scheduler's park hook (EDGESPEC_TEST_PARK_AFTER), so nothing here depends on timing.
. "$(dirname "$0")/lib.sh"
es_test_init serve-drain
model=$models/stories260K.gguf
es_reap_on_exit
stream() { # PORT OUT: a streaming completion that parks after 4 tokens; waits for its first bytes; sets $cpid
  curl -sN --max-time 600 "http://127.0.0.1:$1/v1/completions" -d '{"prompt":"Once","max_tokens":200,"temperature":0,"stream":true}' >"$2" &
  cpid=$!
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    grep -q '"text"' "$2" && return 0
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.05
  done
  return 1
}
health() { curl -s -o "$tmp/health.body" -w '%{http_code}' "http://127.0.0.1:$1/health"; }

# ---- 1. drain until the running session ends ----
EDGESPEC_TEST_PARK_AFTER=4 es_serve_start "$tmp/s1" --drain-timeout 600
stream "$hport" "$tmp/long1.txt" && ok || bad "the stream never started"
[ "$(health "$hport")" = 200 ] && ok || bad "/health before the drain"
kill -TERM "$pid"
for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do [ "$(health "$hport")" = 503 ] && break; sleep 0.05; done
grep -qF '"draining"' "$tmp/health.body" && ok || bad "/health while draining: $(cat "$tmp/health.body")"
code=$(curl -s -D "$tmp/c.hdr" -o "$tmp/c.body" -w '%{http_code}' "http://127.0.0.1:$hport/v1/completions" -d '{"prompt":"x","max_tokens":2}')
[ "$code" = 503 ] && grep -qF '"code":"draining"' "$tmp/c.body" && grep -qi '^Retry-After:' "$tmp/c.hdr" && ok ||
  bad "a completion while draining: $code $(cat "$tmp/c.body")"
expect 1 "$bin" edge -d "$models/draft-mid.gguf" --server "127.0.0.1:$eport" -p "Once" -n 4 -t 1 --reconnect 0
grep -q "draining" "$tmp/err" && ok || bad "an edge session while draining: $(tail -c 300 "$tmp/err")"
# the parked stream still runs, so the server must still be there (it can only leave when it ends)
kill -0 "$pid" 2>/dev/null && ok || bad "the server left while a session was running: $(tail -c 300 "$tmp/s1")"
grep -q '\[DONE\]' "$tmp/long1.txt" && bad "the running stream was ended by the drain" || ok
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not exit 0 after draining: $(tail -c 300 "$tmp/s1")"
grep -q "draining 1 session" "$tmp/s1" && grep -q "drained, stopping" "$tmp/s1" && ok || bad "drain log: $(tail -c 400 "$tmp/s1")"

# ---- 2. the deadline: the rest are told to move ----
EDGESPEC_TEST_PARK_AFTER=4 es_serve_start "$tmp/s2" --drain-timeout 0.5
stream "$hport" "$tmp/long2.txt" && ok || bad "the second stream never started"
kill -TERM "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not exit 0 at the drain deadline: $(tail -c 300 "$tmp/s2")"
grep -q "drain timeout: 1 session told to move" "$tmp/s2" && ok || bad "deadline log: $(tail -c 400 "$tmp/s2")"
wait "$cpid" 2>/dev/null
grep -q '"error"' "$tmp/long2.txt" && ok || bad "the moved stream did not end with an error event: $(tail -c 300 "$tmp/long2.txt")"

# ---- 3. without --drain-timeout, SIGTERM stops at once (as before) ----
es_serve_start "$tmp/s3"
kill -TERM "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve without --drain-timeout did not stop cleanly"
grep -q "terminated, stopping" "$tmp/s3" && ok || bad "plain stop log: $(tail -c 300 "$tmp/s3")"
es_test_finish test_serve_drain
