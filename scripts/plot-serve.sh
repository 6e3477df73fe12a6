#!/usr/bin/env bash
# plot-serve.sh — draws the serving curves from `edgespec bench serve --json` output:
# throughput (tokens per server compute-second, and wall tokens/s) and inter-token latency p50/p99
# and the server's busy fraction against the number of clients, one line per mode (edge modes: per
# scheduling policy, `edge (pipeline)`, `edge (gather)`). Needs gnuplot (scripts/install-deps.sh --bench).
#   scripts/plot-serve.sh RESULT.json OUT_PREFIX
#     -> OUT_PREFIX-throughput.svg, OUT_PREFIX-throughput-wall.svg, OUT_PREFIX-itl.svg, OUT_PREFIX-busy.svg
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 RESULT.json OUT_PREFIX" >&2; exit 2; }
in=$1 out=$2
command -v gnuplot >/dev/null || { echo "plot-serve.sh: gnuplot missing (scripts/install-deps.sh --bench)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$in" "$tmp" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
key = lambda r: f'{r["mode"]} ({r["sched"]})' if r["mode"].startswith("edge") and "sched" in r else r["mode"]
modes = []
for r in d["results"]:
    if key(r) not in modes: modes.append(key(r))
for i, m in enumerate(modes):
    with open(f"{sys.argv[2]}/{i}.dat", "w") as f:
        f.write(f"# {m}\n")
        for r in sorted((r for r in d["results"] if key(r) == m), key=lambda r: r["clients"]):
            busy = r.get("server_busy_fraction", 1 - r.get("server_idle_fraction", 0))
            f.write(f'{r["clients"]} {r["tokens_per_server_compute_s"]} {r["tokens_per_s_wall"]} {r["itl_p50_ms"]} {r["itl_p99_ms"]} {busy}\n')
with open(f"{sys.argv[2]}/modes", "w") as f: f.write("\n".join(modes) + "\n")
title = f'target {d["target"].split("/")[-1]}, draft {d.get("draft", d.get("server_draft", "-")).split("/")[-1]}, RTT {d["rtt_ms"]:g} ms, T={d["temperature"]:g}, {d["server_threads"]} server threads'
open(f"{sys.argv[2]}/title", "w").write(title)
PY
title=$(cat "$tmp/title")
n=$(wc -l < "$tmp/modes")
plots_tp="" plots_wall="" plots_itl="" plots_busy=""
for i in $(seq 0 $((n - 1))); do
  m=$(sed -n "$((i + 1))p" "$tmp/modes")
  plots_tp+="'$tmp/$i.dat' using 1:2 with linespoints lw 2 title '$m',"
  plots_wall+="'$tmp/$i.dat' using 1:3 with linespoints lw 2 dt 2 title '$m (wall)',"
  plots_busy+="'$tmp/$i.dat' using 1:6 with linespoints lw 2 title '$m',"
  plots_itl+="'$tmp/$i.dat' using 1:4 with linespoints lw 2 lc $((i + 1)) title '$m p50', '$tmp/$i.dat' using 1:5 with linespoints lw 1 dt 2 lc $((i + 1)) title '$m p99',"
done
gnuplot <<GP
set terminal svg size 900,560 dynamic font "sans,12" noenhanced
set logscale x 2
set xlabel "concurrent clients"
set key outside right
set grid
set output "$out-throughput.svg"
set title "Throughput — $title"
set ylabel "generated tokens per server compute-second"
plot ${plots_tp%,}
set output "$out-throughput-wall.svg"
set ylabel "generated tokens per wall second"
plot ${plots_wall%,}
set output "$out-itl.svg"
set title "Inter-token latency — $title"
set ylabel "ms"
set logscale y
plot ${plots_itl%,}
unset logscale y
set output "$out-busy.svg"
set title "Server busy fraction — $title"
set ylabel "compute time / wall time"
set yrange [0:1.05]
plot ${plots_busy%,}
GP
echo "wrote $out-throughput.svg $out-throughput-wall.svg $out-itl.svg $out-busy.svg" >&2
