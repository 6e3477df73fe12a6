# lib.sh — helpers shared by the shell tests (sourced, never run): pass/fail counters, exit-code and
# output checks, and waiting for a background server's "listening" line.
# usage: . "$(dirname "$0")/lib.sh"; es_test_init cli-foo   (sets bin, models, tmp; $tmp is created)
set -u

# The repository (the folder above tests/): where build/ is when ctest's environment does not say, so a
# test run by hand works from any folder.
es_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# es_test_init SUBDIR: the binary, the converted test models and a scratch folder build/tmp/SUBDIR,
# emptied first: a log left by an earlier run must never be read as this run's (a background server
# truncates its log only once it has started, and wait_line may look before that).
es_test_init() {
  bin=${ES_BIN:-$es_root/build/edgespec}
  models=${ES_TEST_MODELS:-$es_root/build/models}
  tmp=${ES_BUILD:-$es_root/build}/tmp/$1
  rm -rf "$tmp"
  mkdir -p "$tmp"
  pass=0 fail=0
}
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
# expect CODE cmd...: runs cmd, checks its exit code; stdout in $tmp/out, stderr in $tmp/err
expect() {
  local want=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "exit $rc (want $want): $* -- $(head -c 400 "$tmp/err")"; fi
}
# has FILE STRING: FILE contains STRING (fixed string)
has() { if grep -qF -- "$2" "$1"; then ok; else bad "'$2' not in $1: $(head -c 300 "$1")"; fi; }
# ES_WAIT_CAP_S: how long a wait for an event (a line in a log, a metric reaching a value) may take
# before the test gives up. It is a cap against hangs, not a timing expectation: the event is what the
# test waits for, and a loaded machine (sanitizers, ctest -j) may take far longer than an idle one.
ES_WAIT_CAP_S=${ES_WAIT_CAP_S:-120}
# wait_line LOG PID REGEX: prints \1 of the first line of LOG matching the sed REGEX (delimiter |),
# polling while PID lives (at most ES_WAIT_CAP_S); prints nothing if it never appears.
wait_line() {
  local log=$1 pid=$2 re=$3 v=
  for _ in $(seq 1 $((ES_WAIT_CAP_S * 20))); do
    v=$(sed -n "s|$re|\\1|p" "$log" | head -n 1)
    [ -n "$v" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  printf '%s' "$v"
}
# es_venv_python: prints the venv's python (build/venv unless ES_VENV says otherwise); fails, saying
# how to make it, when the venv is missing
es_venv_python() {
  local py=${ES_VENV:-$es_root/build/venv}/bin/python
  if [ ! -x "$py" ]; then
    echo "FAIL: no Python venv at ${ES_VENV:-$es_root/build/venv} (scripts/install-deps.sh makes it)" >&2
    return 1
  fi
  printf '%s' "$py"
}
# es_reap_on_exit: the background processes a test starts go in the pids array; they are killed when
# the script exits, however it exits.
es_reap_on_exit() {
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT
}
# es_serve_start LOG [ARGS...]: starts `serve -m $model` with an HTTP port in the background (log
# emptied first; environment assignments before the call reach the server), waits until its HTTP
# API is ready; sets $pid, $hport (HTTP) and $eport (edge protocol) and appends to the pids array.
es_serve_start() {
  local log=$1
  shift
  : >"$log"
  "$bin" serve -m "$model" --port 0 --http-port 0 -t 1 "$@" >"$log.out" 2>"$log" &
  pid=$!
  pids+=("$pid")
  hport=$(wait_line "$log" "$pid" "$ES_RE_HTTP")
  eport=$(wait_line "$log" "$pid" "$ES_RE_LISTEN")
  wait_line "$log" "$pid" '^edgespec serve: \(HTTP API ready\).*' >/dev/null
}
ES_RE_LISTEN='^listening on .*:\([0-9][0-9]*\)$'
ES_RE_HTTP='^HTTP API listening on http://.*:\([0-9][0-9]*\)$'
# es_test_finish NAME: prints the tally; its status (the script's last command) is 0 iff nothing failed.
es_test_finish() {
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
