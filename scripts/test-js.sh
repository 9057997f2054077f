#!/usr/bin/env bash
# Tests the JavaScript SDK in sdk/js:
#   1. installs its npm packages with `npm ci` (skipped when node_modules
#      already matches package-lock.json);
#   2. installs Debian's chromium for the browser test when it is missing
#      (with CI set, failing to is an error; otherwise the test is skipped);
#   3. runs `npm test`, which builds dist/ and the herald binary and starts
#      the servers it needs.
# Idempotent; with everything installed it only runs the tests.
set -euo pipefail
cd "$(dirname "$0")/../sdk/js"
export PATH="$PATH:/usr/local/go/bin"

fail() { echo "test-js: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || fail "node is not installed (Node.js 20 or later is needed)"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"

# 1. npm packages
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.herald-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
	echo "test-js: npm ci"
	npm ci --no-audit --no-fund
	echo "$lock_sum" >"$stamp"
fi

# 2. Chromium for the browser test (never a browser download: Debian's package)
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	echo "test-js: $chromium is missing; installing Debian's chromium"
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 &&
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null &&
		[ -x "$chromium" ]; then
		echo "test-js: installed $chromium"
	elif [ -n "${CI:-}" ]; then
		fail "could not install chromium at $chromium (apt-get install -y chromium, as root); the browser test needs it"
	else
		echo "test-js: could not install chromium; the browser test will be skipped" >&2
	fi
fi

# 3. the tests
npm test
