# make test: the whole test suite, with the race detector (what CI runs
# after gofmt and go vet).
# make fuzz: every fuzz target of the module, each for FUZZTIME. A failing
# input is written under the package's testdata/fuzz/<Target>/: commit it
# with its fix.

FUZZTIME ?= 30s

.PHONY: test fuzz

test:
	go test -race ./...

fuzz:
	@set -e; for pkg in $$(go list ./...); do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done
