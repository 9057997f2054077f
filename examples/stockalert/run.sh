#!/usr/bin/env bash
# Runs the stock alert example: builds herald and the backend, starts
# `herald serve` with a temporary data directory and a generated app
# (secret and API key), starts the backend against it, and prints the URL
# to open. Ctrl-C stops both and removes the temporary directory.
#
#   examples/stockalert/run.sh                 # the demo: web page on 127.0.0.1:8700
#   examples/stockalert/run.sh -addr 127.0.0.1:9000 -stocks 30
#   examples/stockalert/run.sh -storm          # measure the market storm and exit
#
# Arguments go to the backend (go run ./examples/stockalert -h lists them).
# HERALD_WS_ADDR and HERALD_API_ADDR choose Herald's listeners (default
# 127.0.0.1:8080 and 127.0.0.1:8081; use 127.0.0.1:0 for any free port).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$PATH:/usr/local/go/bin"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stockalert.XXXXXX")
herald_pid=
cleanup() {
	if [ -n "$herald_pid" ] && kill -0 "$herald_pid" 2>/dev/null; then
		kill -TERM "$herald_pid" && wait "$herald_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "stockalert: building herald and the backend" >&2
(cd "$root" && go build -o "$tmp/herald" ./cmd/herald && go build -o "$tmp/stockalert" ./examples/stockalert)

bundle="$root/sdk/js/dist/herald.min.js"
if [ ! -f "$bundle" ]; then
	echo "stockalert: building the JavaScript SDK's browser bundle (npm run build)" >&2
	(cd "$root/sdk/js" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build)
fi

secret=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
key=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 26)
cat >"$tmp/herald.yaml" <<YAML
data_dir: $tmp/data
ws:
  addr: ${HERALD_WS_ADDR:-127.0.0.1:8080}
tcp:
  addr: ""
api:
  addr: ${HERALD_API_ADDR:-127.0.0.1:8081}
apps:
  - id: stocks
    secret: $secret
    api_keys:
      - $key
log:
  format: json
  level: info
YAML

"$tmp/herald" serve -config "$tmp/herald.yaml" 2>"$tmp/herald.log" &
herald_pid=$!
# Wait (at most 10 s) for Herald's "herald started" record, which has its addresses.
started=
for _ in $(seq 100); do
	started=$(grep -m1 '"herald started"' "$tmp/herald.log" || true)
	[ -n "$started" ] && break
	kill -0 "$herald_pid" 2>/dev/null || { cat "$tmp/herald.log" >&2; exit 1; }
	sleep 0.1
done
[ -n "$started" ] || { echo "stockalert: herald did not start in 10 s" >&2; cat "$tmp/herald.log" >&2; exit 1; }
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$started"; }
ws="ws://$(field ws)$(field ws_path)"
api="http://$(field api)"
echo "stockalert: herald serving clients on $ws, API on $api (data in $tmp)" >&2

STOCKALERT_SECRET=$secret STOCKALERT_API_KEY=$key STOCKALERT_APP=stocks \
	"$tmp/stockalert" -api "$api" -ws "$ws" -sdk "$bundle" "$@"
