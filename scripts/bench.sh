#!/usr/bin/env bash
# The standard benchmark suite: the figures recorded in BENCHMARKS.md.
# Runs in about 7 minutes on the reference machine (2 cores), everything on
# loopback, every run bounded in time. Prints one Markdown row per run, then
# the searched maxima. Usage: scripts/bench.sh [outdir]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-out}
mkdir -p "$out"
bin="$out/herald"
go build -o "$bin" ./cmd/herald || exit 1

rows=()
run() { # name, bench args...
	local name=$1; shift
	echo "== $name: herald bench $*" >&2
	"$bin" bench "$@" -json -report "$out/$name.html" >"$out/$name.json" 2>"$out/$name.log"
	local rc=$?
	[ $rc -ne 0 ] && echo "   (exit $rc: $(tail -1 "$out/$name.log"))" >&2
	rows+=("$("$bin" bench row "$out/$name.json" 2>/dev/null || true)")
	return $rc
}
p99_ms() { # the run's overall p99 in ms
	sed -n 's/.*"p99_ns": \([0-9]*\).*/\1/p' "$1" | head -1 | awk '{printf "%d", $1/1e6}'
}
throughput() { sed -n 's/^  "throughput": \([0-9.]*\).*/\1/p' "$1" | head -1 | awk '{printf "%d", $1}'; }

# Idle memory: 19,000 authenticated, subscribed WebSocket connections held
# 10 s; RSS growth over a baseline taken with 200 warm-up connections open.
run idle-19k connect -conns 19000 -hold 10s

run fanout-19k fanout -conns 19000 -rate 5 -duration 20s -size 100

best_rate=0; best_tp=0
for rate in 25 50 75 100; do
	run "saturation-$rate" fanout -conns 10000 -rate "$rate" -duration 10s -size 100 || true
	p=$(p99_ms "$out/saturation-$rate.json")
	echo "   10k subscribers at $rate/s: p99 ${p} ms, $(throughput "$out/saturation-$rate.json") deliveries/s" >&2
	if [ -n "$p" ] && [ "$p" -lt 250 ]; then best_rate=$rate; best_tp=$(throughput "$out/saturation-$rate.json"); fi
done

best_uni=0
for rate in 2000 3000 5000 8000; do
	run "unicast-$rate" unicast -conns 10000 -rate "$rate" -duration 10s -concurrency 64 || true
	p=$(p99_ms "$out/unicast-$rate.json")
	echo "   unicast at $rate/s: p99 ${p} ms" >&2
	if [ -n "$p" ] && [ "$p" -le 50 ]; then best_uni=$rate; fi
done

best_bulk=0
for rate in 10000 15000 20000; do
	run "unicast-bulk-$rate" unicast -conns 10000 -rate "$rate" -duration 10s -batch 100 -concurrency 16 || true
	p=$(p99_ms "$out/unicast-bulk-$rate.json")
	echo "   bulk unicast (100 per request) at $rate/s: p99 ${p} ms" >&2
	if [ -n "$p" ] && [ "$p" -le 50 ]; then best_bulk=$rate; fi
done

# Storms: every client dropped at once, or the server killed -9 and
# restarted; 2 durable inbox messages per user are pushed while they are
# away and must all arrive (-inbox 2, the default).
run storm-19k storm -conns 19000 -mode drop
run storm-restart-5k storm -conns 5000 -mode restart
run api-5k api -rate 5000 -duration 10s -concurrency 64

# More than 19,000 connections on this box: one command, six server
# processes on their own ports (each may hold 20,000 files), 102,000 clients
# from seven worker processes.
run connect-102k connect -servers 6 -conns 102000 -connect-rate 6000 -hold 5s

echo
"$bin" bench row -header
printf '%s\n' "${rows[@]}"
echo
echo "saturation (10,000 subscribers): highest rate with p99 < 250 ms: $best_rate publishes/s = $best_tp deliveries/s"
echo "unicast: highest rate with p99 <= 50 ms: $best_uni pushes/s (one per request), $best_bulk messages/s (bulk, 100 per request)"
