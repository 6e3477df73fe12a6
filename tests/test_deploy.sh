#!/usr/bin/env bash
# test_deploy.sh — the deployment files in deploy/ say what the program does:
#  - deploy/edgespec.service passes `systemd-analyze verify`, and its ExecStart command line (the
#    model, ports and paths swapped for test ones) starts a server that answers /health and drains to
#    exit 0 on SIGTERM within TimeoutStopSec;
#  - deploy/kubernetes.yaml parses; the replicas' args start a server the same way; the readiness
#    probe asks the HTTP port the args open for /health; the grace period outlasts the drain timeout;
#    the ConfigMap's HAProxy configuration passes `haproxy -c` and sends to the ports the replicas open.
. "$(dirname "$0")/lib.sh"
es_test_init deploy
model=$models/stories260K.gguf
es_reap_on_exit
py=$(es_venv_python) || { bad "no venv python (make test builds it)"; es_test_finish test_deploy; exit; }
command -v systemd-analyze >/dev/null && ok || bad "systemd-analyze missing (scripts/install-deps.sh installs systemd)"
command -v haproxy >/dev/null && ok || bad "haproxy missing (scripts/install-deps.sh installs it)"
src=$(cd "$(dirname "$0")/.." && pwd)
unit=$src/deploy/edgespec.service
: >"$tmp/keys.txt"
echo "test-key-$$" >"$tmp/keys.txt"

# serve_args_run LABEL ARGS...: starts `edgespec ARGS` (already swapped), waits for its HTTP API, checks
# /health, sends SIGTERM and expects exit 0
serve_args_run() {
  local label=$1
  shift
  : >"$tmp/$label.log"
  "$bin" "$@" >"$tmp/$label.out" 2>"$tmp/$label.log" &
  pid=$!
  pids+=("$pid")
  local hp
  hp=$(wait_line "$tmp/$label.log" "$pid" "$ES_RE_HTTP")
  if [ -z "$hp" ]; then bad "$label: no HTTP API: $(tail -c 400 "$tmp/$label.log")"; return; fi
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp/health")" = 200 ] && ok || bad "$label: /health"
  kill -TERM "$pid"
  wait "$pid"
  local rc=$?
  [ "$rc" -eq 0 ] && ok || bad "$label: exit $rc after SIGTERM: $(tail -c 300 "$tmp/$label.log")"
}

# ---- systemd ----
if command -v systemd-analyze >/dev/null; then
  sed "s#/usr/local/bin/edgespec#$bin#" "$unit" >"$tmp/edgespec.service"
  systemd-analyze verify "$tmp/edgespec.service" >"$tmp/verify.txt" 2>&1 && ok || bad "systemd-analyze verify: $(cat "$tmp/verify.txt")"
fi
"$py" - "$unit" "$model" "$tmp/keys.txt" >"$tmp/unit.args" <<'PY' || bad "the unit's ExecStart: $(cat "$tmp/unit.args")"
import re, shlex, sys
unit, model, keys = sys.argv[1:]
env, cmd, stop = {}, None, None
for line in open(unit):
    line = line.strip()
    if line.startswith("Environment="):
        k, v = line[len("Environment="):].split("=", 1)
        env[k] = v
    elif line.startswith("ExecStart="):
        cmd = line[len("ExecStart="):]
    elif line.startswith("TimeoutStopSec="):
        stop = int(line.split("=", 1)[1])
args = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], cmd))
assert args[0] == "/usr/local/bin/edgespec" and args[1] == "serve", args
drain = int(args[args.index("--drain-timeout") + 1])
assert stop and stop > drain, (stop, drain)  # systemd must not SIGKILL a drain in progress
swap = {"-m": model, "--port": "0", "--http-port": "0", "--host": "127.0.0.1", "--http-host": "127.0.0.1",
        "--kv-memory": "8M", "--api-keys-file": keys}
out = args[1:]
for i, a in enumerate(out[:-1]):
    if a in swap:
        out[i + 1] = swap[a]
print("\n".join(out))
PY
mapfile -t uargs <"$tmp/unit.args"
[ "${#uargs[@]}" -gt 4 ] && serve_args_run unit "${uargs[@]}" -t 1

# ---- kubernetes ----
"$py" - "$src/deploy/kubernetes.yaml" "$model" "$tmp/keys.txt" "$tmp/k8s-haproxy.cfg" >"$tmp/k8s.args" <<'PY' || bad "kubernetes.yaml: $(cat "$tmp/k8s.args")"
import re, sys, yaml
path, model, keys, cfg_out = sys.argv[1:]
docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(path))}
dep = docs[("Deployment", "edgespec")]["spec"]["template"]["spec"]
c = dep["containers"][0]
args = c["args"]
opt = lambda k: args[args.index(k) + 1]
http, edge, drain = int(opt("--http-port")), int(opt("--port")), int(opt("--drain-timeout"))
assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": http}, c["readinessProbe"]
assert {p["containerPort"] for p in c["ports"]} == {http, edge}
assert dep["terminationGracePeriodSeconds"] > drain
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
assert opt("-m").startswith(mounts["models"] + "/") and opt("--api-keys-file").startswith(mounts["keys"] + "/")
svc = docs[("Service", "edgespec-replicas")]["spec"]
assert svc["clusterIP"] == "None" and {p["port"] for p in svc["ports"]} == {http, edge}
cfg = docs[("ConfigMap", "edgespec-haproxy")]["data"]["haproxy.cfg"]
targets = set(int(p) for p in re.findall(r"server-template \w+ \d+ edgespec-replicas\S*:(\d+)", cfg))
assert targets == {http, edge}, targets
assert f"check port {http}" in cfg  # the edge backend's health check asks the HTTP port
open(cfg_out, "w").write(cfg)
swap = {"-m": model, "--port": "0", "--http-port": "0", "--host": "127.0.0.1", "--http-host": "127.0.0.1",
        "--kv-memory": "8M", "--api-keys-file": keys}
out = list(args)
for i, a in enumerate(out[:-1]):
    if a in swap:
        out[i + 1] = swap[a]
print("\n".join(out))
PY
mapfile -t kargs <"$tmp/k8s.args"
[ "${#kargs[@]}" -gt 4 ] && serve_args_run k8s "${kargs[@]}" -t 1
if command -v haproxy >/dev/null && [ -s "$tmp/k8s-haproxy.cfg" ]; then
  haproxy -c -f "$tmp/k8s-haproxy.cfg" >"$tmp/hc.txt" 2>&1 && ok || bad "haproxy -c on the ConfigMap: $(cat "$tmp/hc.txt")"
fi
es_test_finish test_deploy
