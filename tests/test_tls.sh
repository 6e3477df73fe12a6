#!/usr/bin/env bash
# test_tls.sh — TLS and api keys end to end: a throw-away CA and a server certificate for
# 127.0.0.1/localhost made with the openssl CLI; `serve --tls-cert --tls-key --api-keys-file` with TLS
# on both ports. Checks: HTTPS with a right key (--api-key or any key of the file) is 200, a wrong one
# 401, plain HTTP to the TLS port fails; `edge --tls --tls-ca` generates the same greedy text as the
# target alone (by address and by name); a wrong CA or name is a certificate error, --tls-insecure
# connects (with a warning); a plain edge and a wrong key are refused; /metrics counts the auth and
# handshake failures of each listener; the loading responder speaks TLS; bad certificate / key / keys-file arguments fail at start.
. "$(dirname "$0")/lib.sh"
es_test_init tls
target=$models/stories260K.gguf
draft=$models/draft-mid.gguf
command -v openssl >/dev/null || { echo "test_tls: openssl (the CLI) is missing: scripts/install-deps.sh"; exit 1; }
command -v curl >/dev/null || { echo "test_tls: curl is missing"; exit 1; }

# ---- certificates: a CA, a server certificate it signs, and a second CA that signed nothing ----
pki=$tmp/pki
rm -rf "$pki"
mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ca_ext=(-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign)
mkpki() {
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 2 -subj "/CN=edgespec test CA" "${ca_ext[@]}" &&
    openssl req -x509 "${ec[@]}" -keyout "$pki/other.key" -out "$pki/other.pem" -days 2 -subj "/CN=another CA" "${ca_ext[@]}" &&
    openssl req "${ec[@]}" -keyout "$pki/srv.key" -out "$pki/srv.csr" -subj "/CN=localhost" &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$pki/ext.cnf" &&
    openssl x509 -req -in "$pki/srv.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -out "$pki/srv.pem" \
      -days 2 -extfile "$pki/ext.cnf"
}
if mkpki >"$tmp/pki.log" 2>&1; then ok; else
  bad "cannot make the test certificates: $(tail -c 400 "$tmp/pki.log")"
  es_test_finish test_tls
  exit 1
fi

K0=key-from-the-command-line
K1=first-key-of-the-file
K2=second-key-of-the-file
printf '# edgespec api keys\n\n  %s  \n# a comment\n%s\n' "$K1" "$K2" >"$tmp/keys.txt"

# ---- startup errors: clear, before anything loads ----
expect 2 "$bin" serve -m "$target" --port 0 --tls-cert "$pki/srv.pem"
has "$tmp/err" "--tls-key"
expect 1 "$bin" serve -m "$target" --port 0 --tls-cert "$pki/nope.pem" --tls-key "$pki/srv.key"
has "$tmp/err" "nope.pem"
expect 1 "$bin" serve -m "$target" --port 0 --tls-cert "$pki/srv.pem" --tls-key "$pki/other.key"
has "$tmp/err" "does not match"
expect 1 "$bin" serve -m "$target" --port 0 --tls-cert "$pki/ext.cnf" --tls-key "$pki/srv.key"
has "$tmp/err" "PEM"
printf '# only comments\n\n' >"$tmp/empty-keys.txt"
expect 1 "$bin" serve -m "$target" --port 0 --api-keys-file "$tmp/empty-keys.txt"
has "$tmp/err" "no api key"
expect 1 "$bin" serve -m "$target" --port 0 --api-keys-file "$tmp/missing-keys.txt"
has "$tmp/err" "missing-keys.txt"

# ---- the reference: the target alone ----
prompt="Once upon a time"
expect 0 "$bin" run -m "$target" -p "$prompt" -n 40 -t 1
cp "$tmp/out" "$tmp/ref.txt"
[ -s "$tmp/ref.txt" ] && ok || bad "run printed nothing"
same_as_ref() { # label
  if cmp -s "$tmp/out" "$tmp/ref.txt"; then ok; else bad "$1: text differs from run: $(head -c 200 "$tmp/out") vs $(head -c 200 "$tmp/ref.txt")"; fi
}

# ---- the TLS server ----
# the server holds its loading phase until the gate file exists (EDGESPEC_TEST_LOAD_GATE, a test hook)
gate=$tmp/load-gate
rm -f "$gate"
EDGESPEC_TEST_LOAD_GATE=$gate "$bin" serve -m "$target" --port 0 --http-port 0 -t 1 --api-key "$K0" --api-keys-file "$tmp/keys.txt" \
  --tls-cert "$pki/srv.pem" --tls-key "$pki/srv.key" >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
hport=$(wait_line "$tmp/serve.err" "$pid" '^HTTP API listening on https://.*:\([0-9][0-9]*\)$')
# while the model loads, the responder on the HTTP port speaks TLS too
code=$(curl -s -o "$tmp/loading.body" -w '%{http_code}' --max-time "$ES_WAIT_CAP_S" --cacert "$pki/ca.pem" "https://127.0.0.1:${hport:-1}/health")
if [ "$code" = 503 ] && grep -qF loading "$tmp/loading.body"; then ok; else bad "https /health while loading: $code $(head -c 200 "$tmp/loading.body")"; fi
touch "$gate"
port=$(wait_line "$tmp/serve.err" "$pid" "$ES_RE_LISTEN")
if [ -z "$port" ] || [ -z "$hport" ]; then
  bad "the TLS server did not start: $(head -c 400 "$tmp/serve.err")"
  kill "$pid" 2>/dev/null
  es_test_finish test_tls
  exit 1
fi
has "$tmp/serve.err" "TLS"
wait_line "$tmp/serve.err" "$pid" '^edgespec serve: \(HTTP API ready\).*' >/dev/null

https() { # NAME URLPATH [curl args...]: $code; body in $tmp/NAME.body
  local name=$1 path=$2
  shift 2
  code=$(curl -s -o "$tmp/$name.body" -w '%{http_code}' --max-time "$ES_WAIT_CAP_S" --cacert "$pki/ca.pem" "$@" "https://127.0.0.1:$hport$path")
}
want() { if [ "$code" = "$2" ]; then ok; else bad "$1: status $code, want $2: $(head -c 300 "$tmp/$1.body")"; fi; }

# (a) HTTPS and keys
https models0 /v1/models -H "Authorization: Bearer $K0"
want models0 200
https models1 /v1/models -H "Authorization: Bearer $K1"
want models1 200
https models2 /v1/models -H "Authorization: Bearer $K2"
want models2 200
grep -qF '"object":"list"' "$tmp/models2.body" && ok || bad "models body: $(head -c 200 "$tmp/models2.body")"
https wrong /v1/models -H "Authorization: Bearer ${K1}x"
want wrong 401
https nokey /v1/models
want nokey 401
https comment /v1/models -H "Authorization: Bearer # a comment"
want comment 401
code=$(curl -s -o "$tmp/byname.body" -w '%{http_code}' --max-time "$ES_WAIT_CAP_S" --cacert "$pki/ca.pem" \
  --resolve "localhost:$hport:127.0.0.1" -H "Authorization: Bearer $K1" "https://localhost:$hport/health")
want byname 200
https completion /v1/completions -H "Authorization: Bearer $K2" -H 'Content-Type: application/json' \
  -d '{"prompt":"Once upon a time","max_tokens":8,"temperature":0}'
want completion 200
grep -qF '"text"' "$tmp/completion.body" && ok || bad "completion body: $(head -c 200 "$tmp/completion.body")"
# plain HTTP on the TLS port gets no HTTP answer; HTTPS with an untrusted CA is refused by curl
if curl -s -o /dev/null --max-time 10 "http://127.0.0.1:$hport/health"; then bad "plain HTTP was answered on the TLS port"; else ok; fi
if curl -s -o /dev/null --max-time 10 --cacert "$pki/other.pem" "https://127.0.0.1:$hport/health"; then
  bad "curl trusted a certificate of another CA"
else ok; fi

# (b) the edge over TLS: the same text as the target alone
srv=127.0.0.1:$port
expect 0 "$bin" edge -d "$draft" --server "$srv" --tls --tls-ca "$pki/ca.pem" --api-key "$K1" -p "$prompt" -n 40 -t 1
same_as_ref "edge --tls"
expect 0 "$bin" edge -d "$draft" --server "localhost:$port" --tls-ca "$pki/ca.pem" --api-key "$K0" -p "$prompt" -n 40 -t 1 --spec tree
same_as_ref "edge --tls by name, tree"
expect 0 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/ca.pem" --api-key "$K2" -p "$prompt" -n 40 -t 1 --no-draft
same_as_ref "edge --tls --no-draft"
EDGESPEC_API_KEY=$K1 expect 0 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/ca.pem" -p "$prompt" -n 40 -t 1 --emulate-rtt-ms 10
same_as_ref "edge --tls, key from the environment, emulated rtt"

# (c) certificate errors, --tls-insecure, refusals
expect 1 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/other.pem" --api-key "$K1" -p "$prompt" -n 8 -t 1
has "$tmp/err" "certificate verify failed"
expect 1 "$bin" edge -d "$draft" --server "$srv" --tls --api-key "$K1" -p "$prompt" -n 8 -t 1   # system CAs only
has "$tmp/err" "certificate verify failed"
expect 1 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/ca.pem" --tls-server-name wrong.example --api-key "$K1" -p "$prompt" -n 8 -t 1
has "$tmp/err" "certificate verify failed"
expect 0 "$bin" edge -d "$draft" --server "$srv" --tls-insecure --api-key "$K1" -p "$prompt" -n 40 -t 1
same_as_ref "edge --tls-insecure"
has "$tmp/err" "WARNING"
expect 1 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/ca.pem" --api-key wrong-key -p "$prompt" -n 8 -t 1
has "$tmp/err" "api key"
expect 1 "$bin" edge -d "$draft" --server "$srv" --api-key "$K1" -p "$prompt" -n 8 -t 1 --io-timeout 5 --reconnect 0  # plain TCP
expect 2 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/ca.pem" --tls-insecure -p x
expect 1 "$bin" edge -d "$draft" --server "$srv" --tls-ca "$pki/none.pem" -p x -n 4
has "$tmp/err" "none.pem"

# (d) /metrics counts what was refused, per listener
code=$(curl -s -o "$tmp/metrics.body" -w '%{http_code}' --max-time "$ES_WAIT_CAP_S" --cacert "$pki/ca.pem" "https://127.0.0.1:$hport/metrics")
want metrics 200
metric() { awk -v n="$1" '$1 == n { print $2; exit }' "$tmp/metrics.body"; }
v=$(metric 'edgespec_auth_failures_total{listener="http"}')
[ "${v:-0}" -ge 3 ] && ok || bad "http auth failures: '$v' (want >= 3)"
v=$(metric 'edgespec_auth_failures_total{listener="edge"}')
[ "${v:-0}" -ge 1 ] && ok || bad "edge auth failures: '$v' (want >= 1)"
v=$(metric 'edgespec_tls_handshake_failures_total{listener="http"}')
[ "${v:-0}" -ge 2 ] && ok || bad "http TLS handshake failures: '$v' (want >= 2: plain HTTP, untrusted CA)"
v=$(metric 'edgespec_tls_handshake_failures_total{listener="edge"}')
[ "${v:-0}" -ge 4 ] && ok || bad "edge TLS handshake failures: '$v' (want >= 4: 3 rejected certificates, 1 plain edge)"

kill -INT "$pid"
wait "$pid"
[ $? -eq 0 ] && ok || bad "serve did not stop cleanly"

es_test_finish test_tls
