# make test: every test, Go (with the race detector) and the JavaScript
# SDK's (Node and headless Chromium; scripts/test-js.sh installs what they
# need). What CI runs after gofmt and go vet.
# make test-go, make test-js: one half.
# make fuzz: every fuzz target of the module, each for FUZZTIME. A failing
# input is written under the package's testdata/fuzz/<Target>/: commit it
# with its fix.

FUZZTIME ?= 30s

.PHONY: test test-go test-js fuzz

test: test-go test-js

test-go:
	go test -race ./...

test-js:
	bash scripts/test-js.sh

fuzz:
	@set -e; for pkg in $$(go list ./...); do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done
