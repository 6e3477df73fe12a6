# lib.sh — helpers shared by the shell tests (sourced, never run): pass/fail counters, exit-code and
# output checks, and waiting for a background server's "listening" line.
# usage: . "$(dirname "$0")/lib.sh"; es_test_init cli-foo   (sets bin, models, tmp; $tmp is created)
set -u

# es_test_init SUBDIR: the binary, the converted test models and a scratch folder build/tmp/SUBDIR.
es_test_init() {
  bin=${ES_BIN:-build/edgespec}
  models=${ES_TEST_MODELS:-build/models}
  tmp=${ES_BUILD:-build}/tmp/$1
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
# wait_line LOG PID REGEX: prints \1 of the first line of LOG matching the sed REGEX (delimiter |),
# polling for up to 10 s while PID lives; prints nothing if it never appears.
wait_line() {
  local log=$1 pid=$2 re=$3 v=
  for _ in $(seq 1 200); do
    v=$(sed -n "s|$re|\\1|p" "$log" | head -n 1)
    [ -n "$v" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  printf '%s' "$v"
}
ES_RE_LISTEN='^listening on .*:\([0-9][0-9]*\)$'
ES_RE_HTTP='^HTTP API listening on http://.*:\([0-9][0-9]*\)$'
# es_test_finish NAME: prints the tally; its status (the script's last command) is 0 iff nothing failed.
es_test_finish() {
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
