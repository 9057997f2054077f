#!/usr/bin/env bash
# The standard benchmark suite: the figures recorded in BENCHMARKS.md.
# Runs in about 7 minutes on the reference machine (2 cores), everything on
# loopback, every run bounded in time. Prints one Markdown row per run, then
# the searched maxima. Usage: scripts/bench.sh [outdir]
#
# CLUSTER=1 scripts/bench.sh [outdir] adds the cluster rows (about 4 more
# minutes): three-node clusters on the local Redis (127.0.0.1:6379, or
# $HERALD_REDIS) and NATS (nats://127.0.0.1:4222, or $HERALD_NATS), each
# beside the same run on a one-node cluster (same Redis store). CLUSTER=only
# runs just those.
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

cluster=${CLUSTER:-0}
if [ "$cluster" = only ]; then skip_single=1; else skip_single=0; fi
if [ "$skip_single" = 0 ]; then
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
fi

best_cross=0
if [ "$cluster" != 0 ]; then
	engines=(-cluster-redis "${HERALD_REDIS:-127.0.0.1:6379}" -cluster-nats "${HERALD_NATS:-nats://127.0.0.1:4222}")
	# Fan-out to 19,000 subscribers spread over three nodes, each publish
	# through the nodes in turn; beside it the same on one node.
	run cluster3-fanout-19k fanout -cluster 3 "${engines[@]}" -conns 19000 -rate 5 -duration 20s
	run cluster1-fanout-19k fanout -cluster 1 "${engines[@]}" -conns 19000 -rate 5 -duration 20s
	# Durable unicast, API on node 1, every client on nodes 2 and 3: each
	# message crosses one hop. Beside it the same rate on one node.
	for rate in 250 500 1000 2000; do
		run "cluster3-unicast-$rate" unicast -cluster 3 "${engines[@]}" -api-nodes 1 -client-nodes 2,3 -conns 10000 -rate "$rate" -duration 10s -concurrency 64 || true
		run "cluster1-unicast-$rate" unicast -cluster 1 "${engines[@]}" -conns 10000 -rate "$rate" -duration 10s -concurrency 64 || true
		p=$(p99_ms "$out/cluster3-unicast-$rate.json")
		echo "   cross-node unicast at $rate/s: p99 ${p} ms" >&2
		if [ -n "$p" ] && [ "$p" -le 50 ]; then best_cross=$rate; fi
	done
	# Node 1 killed (-9) with 5,000 clients on it: they reconnect to nodes 2
	# and 3 and must get every inbox message (1 per user before the kill, 1
	# after) and recover their topic.
	run cluster3-kill-5k storm -cluster 3 "${engines[@]}" -mode kill -conns 5000 -drain 15s
fi

echo
"$bin" bench row -header
printf '%s\n' "${rows[@]}"
echo
if [ "$skip_single" = 0 ]; then
	echo "saturation (10,000 subscribers): highest rate with p99 < 250 ms: $best_rate publishes/s = $best_tp deliveries/s"
	echo "unicast: highest rate with p99 <= 50 ms: $best_uni pushes/s (one per request), $best_bulk messages/s (bulk, 100 per request)"
fi
if [ "$cluster" != 0 ]; then
	echo "cluster unicast, API on node 1, clients on nodes 2-3: highest rate with p99 <= 50 ms: $best_cross pushes/s"
fi
