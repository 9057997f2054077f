#!/usr/bin/env bash
# Starts a Herald cluster on loopback against the local Redis and NATS, in
# one command, and stops it on Ctrl-C (or after -t seconds):
#
#   scripts/cluster.sh            # three nodes
#   scripts/cluster.sh -n 5 -t 60 # five nodes, stopped after a minute
#
# Options:
#   -n N        nodes (default 3)
#   -t SECONDS  stop after this long (default: run until Ctrl-C)
#   -d DIR      working directory: config, data and logs (default: a new
#               temporary directory)
#   -p PREFIX   prefix of the cluster's Redis keys and NATS subjects
#               (default herald-local; two clusters on one Redis differ in it)
#   -r ADDR     Redis host:port (default $HERALD_REDIS or 127.0.0.1:6379)
#   -s URL      NATS URL (default $HERALD_NATS or nats://127.0.0.1:4222)
#
# Node i (1-based) listens on 127.0.0.1: WebSocket 91i0 (/ws), TCP 91i1,
# API 91i2. Every node serves the same app, "demo", whose API key and
# token secret are written to DIR/herald.yaml. The script prints the
# endpoints, a client token and a curl that pushes through node 1.
#
# Redis should keep what it acknowledges (appendonly yes, appendfsync
# always) for Herald's delivery promise; the script warns when it does not
# (see docs/cluster.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

nodes=3 seconds=0 dir="" prefix=herald-local
redis=${HERALD_REDIS:-127.0.0.1:6379}
nats=${HERALD_NATS:-nats://127.0.0.1:4222}
while getopts "n:t:d:p:r:s:h" opt; do
	case $opt in
	n) nodes=$OPTARG ;;
	t) seconds=$OPTARG ;;
	d) dir=$OPTARG ;;
	p) prefix=$OPTARG ;;
	r) redis=$OPTARG ;;
	s) nats=$OPTARG ;;
	*) sed -n '2,25p' "$0"; exit 2 ;;
	esac
done
if ! [[ $nodes =~ ^[1-9]$ ]]; then
	echo "cluster: -n must be 1 to 9" >&2; exit 2
fi
[ -n "$dir" ] || dir=$(mktemp -d /tmp/herald-cluster.XXXXXX)
mkdir -p "$dir"

# The engines must answer before any node starts.
if ! (exec 3<>"/dev/tcp/${redis%:*}/${redis##*:}") 2>/dev/null; then
	echo "cluster: no Redis at $redis (start it, or pass -r)" >&2; exit 1
fi
hostport=${nats#nats://}
if ! (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
	echo "cluster: no NATS at $nats (start it, or pass -s)" >&2; exit 1
fi

echo "cluster: building herald"
go build -o "$dir/herald" ./cmd/herald

secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
cat >"$dir/herald.yaml" <<EOF
# Written by scripts/cluster.sh: what every node of this cluster shares.
apps:
  - id: demo
    secret: $secret
    api_keys: [$key]
store: redis
cluster:
  redis: $redis
  nats: $nats
  prefix: $prefix
admin:
  tokens: [$admin]
log:
  level: warn
EOF

pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "cluster: stopping ${#pids[@]} nodes"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	echo "cluster: stopped; config, data and logs are in $dir"
}
trap stop INT TERM EXIT

for i in $(seq 1 "$nodes"); do
	mkdir -p "$dir/n$i"
	"$dir/herald" serve -config "$dir/herald.yaml" -node "n$i" -data-dir "$dir/n$i" \
		-ws-addr "127.0.0.1:91${i}0" -tcp-addr "127.0.0.1:91${i}1" -api-addr "127.0.0.1:91${i}2" \
		>"$dir/n$i.log" 2>&1 &
	pids+=($!)
done

# Up when every node's /healthz answers 200.
for i in $(seq 1 "$nodes"); do
	up=""
	for _ in $(seq 1 100); do
		if curl -fs "http://127.0.0.1:91${i}2/healthz" >/dev/null 2>&1; then up=1; break; fi
		if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then break; fi
		sleep 0.1 # polling for a process to come up
	done
	if [ -z "$up" ]; then
		echo "cluster: node n$i did not come up; its log:" >&2
		cat "$dir/n$i.log" >&2
		exit 1
	fi
done
grep -h "not durable" "$dir"/n*.log | head -1 | sed 's/^/cluster: warning: /' || true

token=$("$dir/herald" token -config "$dir/herald.yaml" -data-dir "$dir/n1" -user alice 2>/dev/null || true)
echo "cluster: $nodes nodes up (Redis $redis, NATS $nats, prefix $prefix)"
for i in $(seq 1 "$nodes"); do
	echo "  n$i  ws://127.0.0.1:91${i}0/ws  tcp 127.0.0.1:91${i}1  api http://127.0.0.1:91${i}2  log $dir/n$i.log"
done
cat <<EOF
  API key: $key
  token for user alice: $token
  dashboard: http://127.0.0.1:9112/admin/ (any node's), admin token: $admin
  nodes:   curl -s http://127.0.0.1:9112/v1/cluster -H "Authorization: Bearer $key"
  push:    curl -s http://127.0.0.1:9112/v1/apps/demo/users/alice/messages -H "Authorization: Bearer $key" -d '{"data":"hello"}'
EOF

if [ "$seconds" -gt 0 ]; then
	sleep "$seconds" # the requested run time
else
	echo "cluster: Ctrl-C stops it"
	wait "${pids[0]}" || true
fi
