#!/usr/bin/env bash
# test_haproxy_tls.sh — deploy/haproxy.cfg with TLS terminated by HAProxy (EDGESPEC_TLS_PEM): a
# throw-away CA and a certificate for 127.0.0.1 made with the openssl CLI; one plain `serve` replica
# behind it (the other two server lines point at a closed port and stay DOWN). An edge with
# `--tls --tls-ca` through the TLS front end gives exactly `edgespec run`'s tokens; an HTTPS
# completion with `--cacert` gives the target's text; a plain edge on the TLS port fails, and the
# plain front ends still work beside the TLS ones.
. "$(dirname "$0")/lib.sh"
es_test_init haproxy-tls
src=$(cd "$(dirname "$0")/.." && pwd)
model=$models/stories260K.gguf
es_reap_on_exit
command -v haproxy >/dev/null || { echo "test_haproxy_tls: FAIL: haproxy is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "test_haproxy_tls: FAIL: the openssl CLI is missing" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pki=$tmp/pki
mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
{
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 2 -subj "/CN=edgespec test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
    openssl req "${ec[@]}" -keyout "$pki/srv.key" -out "$pki/srv.csr" -subj "/CN=localhost" &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$pki/ext.cnf" &&
    openssl x509 -req -in "$pki/srv.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -out "$pki/srv.pem" \
      -days 2 -extfile "$pki/ext.cnf" && cat "$pki/srv.pem" "$pki/srv.key" >"$pki/haproxy.pem"
} >"$tmp/pki.log" 2>&1 && ok || { bad "cannot make the test certificates: $(tail -c 300 "$tmp/pki.log")"; es_test_finish test_haproxy_tls; exit 1; }

es_serve_start "$tmp/r1"
dead=$(free_port)
export EDGESPEC_HAPROXY_STATS=$tmp/haproxy.sock EDGESPEC_CHECK_INTER=100ms EDGESPEC_TLS_PEM=$pki/haproxy.pem
export EDGESPEC_EDGE_BIND=127.0.0.1:$(free_port) EDGESPEC_HTTP_BIND=127.0.0.1:$(free_port)
export EDGESPEC_EDGE_TLS_BIND=127.0.0.1:$(free_port) EDGESPEC_HTTP_TLS_BIND=127.0.0.1:$(free_port)
export EDGESPEC_R1_EDGE=127.0.0.1:$eport EDGESPEC_R1_HTTP=127.0.0.1:$hport EDGESPEC_R1_HTTP_PORT=$hport
for r in R2 R3; do export "EDGESPEC_${r}_EDGE=127.0.0.1:$dead" "EDGESPEC_${r}_HTTP=127.0.0.1:$dead" "EDGESPEC_${r}_HTTP_PORT=$dead"; done
haproxy -f "$src/deploy/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
hapid=$!
pids+=("$hapid")
# until HAProxy sends HTTP to the replica (its health check passed)
for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$EDGESPEC_HTTP_BIND/health")" = 200 ] && break
  kill -0 "$hapid" 2>/dev/null || break
  sleep 0.05
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$EDGESPEC_HTTP_BIND/health")" = 200 ] && ok || bad "no replica behind HAProxy: $(tail -c 400 "$tmp/haproxy.log")"

"$bin" run -m "$model" -p "Once upon a time" -n 32 -t 1 --temp 0 --json >"$tmp/ref.json" 2>/dev/null || bad "run failed"
same_tokens() { python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); sys.exit(a["tokens"] != b["tokens"])' "$1" "$2"; }
# TLS edge through HAProxy
expect 0 "$bin" edge -d "$models/draft-mid.gguf" --server "$EDGESPEC_EDGE_TLS_BIND" --tls-ca "$pki/ca.pem" -p "Once upon a time" -n 32 -t 1 --json
same_tokens "$tmp/out" "$tmp/ref.json" && ok || bad "TLS edge through HAProxy: $(head -c 300 "$tmp/out")"
# plain edge beside it
expect 0 "$bin" edge -d "$models/draft-mid.gguf" --server "$EDGESPEC_EDGE_BIND" -p "Once upon a time" -n 32 -t 1 --json
same_tokens "$tmp/out" "$tmp/ref.json" && ok || bad "plain edge through HAProxy: $(head -c 300 "$tmp/out")"
# a plain edge on the TLS port gets no session
"$bin" edge -d "$models/draft-mid.gguf" --server "$EDGESPEC_EDGE_TLS_BIND" -p "Once upon a time" -n 8 -t 1 --reconnect 0 >"$tmp/out" 2>"$tmp/err"
[ $? -ne 0 ] && ok || bad "a plain edge on HAProxy's TLS port generated: $(head -c 200 "$tmp/out")"
# HTTPS with the CA, the target's text
code=$(curl -s --cacert "$pki/ca.pem" -o "$tmp/https.json" -w '%{http_code}' "https://$EDGESPEC_HTTP_TLS_BIND/v1/completions" \
  -d '{"prompt":"Once upon a time","max_tokens":32,"temperature":0}')
[ "$code" = 200 ] && python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); sys.exit(a["choices"][0]["text"] != b["text"])' "$tmp/https.json" "$tmp/ref.json" &&
  ok || bad "HTTPS through HAProxy: $code $(head -c 300 "$tmp/https.json")"
curl -s -o /dev/null "https://$EDGESPEC_HTTP_TLS_BIND/health" && bad "HTTPS without the CA was trusted" || ok
es_test_finish test_haproxy_tls
