#!/usr/bin/env bash
# netem.sh — real-kernel WAN emulation for edge–server runs: puts the server in one network namespace
# and the edge in another, joined by a veth pair whose two ends each delay packets by RTT/2 (and
# optionally cap bandwidth / add loss) with `tc netem`. Needs root and iproute2 (ip, tc).
#
#   scripts/netem.sh [--rtt-ms 14] [--rate 20mbit] [--loss 0%] -- SERVER_CMD... ::: EDGE_CMD...
#
# The server side gets address 10.77.0.1, the edge side 10.77.0.2: start the server with
# `--host 10.77.0.1` and point the edge at `--server 10.77.0.1:PORT`. Example:
#   sudo scripts/netem.sh --rtt-ms 14 -- build/edgespec serve -m T.gguf --host 10.77.0.1 ::: \
#        build/edgespec edge -d D.gguf --server 10.77.0.1:7700 -p "Once upon a time" --json
# The server runs in the background until the edge command exits; namespaces are removed on exit.
# The in-process alternative (no root) is `edgespec edge --emulate-rtt-ms MS`.
set -euo pipefail
rtt=14 rate="" loss=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rtt-ms) rtt=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --loss) loss=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "netem.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
server=() edge=()
while [ $# -gt 0 ] && [ "$1" != ":::" ]; do server+=("$1"); shift; done
[ $# -gt 0 ] && shift
edge=("$@")
if [ ${#server[@]} -eq 0 ] || [ ${#edge[@]} -eq 0 ]; then echo "netem.sh: need SERVER_CMD ::: EDGE_CMD" >&2; exit 2; fi
[ "$(id -u)" -eq 0 ] || { echo "netem.sh: needs root (network namespaces and tc)" >&2; exit 1; }
command -v tc >/dev/null || { echo "netem.sh: needs iproute2 (apt-get install iproute2)" >&2; exit 1; }

modprobe sch_netem 2>/dev/null || true
ns_s=es-srv-$$ ns_e=es-edge-$$
cleanup() {
  [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null || true
  ip netns del "$ns_s" 2>/dev/null || true
  ip netns del "$ns_e" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns_s"
ip netns add "$ns_e"
ip link add "vs$$" type veth peer name "ve$$"
ip link set "vs$$" netns "$ns_s"
ip link set "ve$$" netns "$ns_e"
ip -n "$ns_s" addr add 10.77.0.1/24 dev "vs$$"
ip -n "$ns_e" addr add 10.77.0.2/24 dev "ve$$"
for ns in "$ns_s" "$ns_e"; do ip -n "$ns" link set lo up; done
ip -n "$ns_s" link set "vs$$" up
ip -n "$ns_e" link set "ve$$" up
half=$(awk -v r="$rtt" 'BEGIN { printf "%.3fms", r / 2 }')
opts=(delay "$half")
[ -n "$rate" ] && opts+=(rate "$rate")
[ -n "$loss" ] && opts+=(loss "$loss")
if ! ip netns exec "$ns_s" tc qdisc add dev "vs$$" root netem "${opts[@]}"; then
  echo "netem.sh: the kernel has no netem qdisc (module sch_netem); use edgespec edge --emulate-rtt-ms instead" >&2
  exit 1
fi
ip netns exec "$ns_e" tc qdisc add dev "ve$$" root netem "${opts[@]}"
echo "netem.sh: RTT ${rtt} ms${rate:+, rate $rate}${loss:+, loss $loss}; server 10.77.0.1, edge 10.77.0.2" >&2
ip netns exec "$ns_s" "${server[@]}" &
spid=$!
# wait for the server to listen (its first lines go to stderr); give it up to 60 s
for _ in $(seq 1 600); do
  if ip netns exec "$ns_s" ss -ltn 2>/dev/null | grep -q '10.77.0.1:'; then break; fi
  kill -0 "$spid" 2>/dev/null || { echo "netem.sh: server exited" >&2; exit 1; }
  sleep 0.1
done
ip netns exec "$ns_e" "${edge[@]}"
