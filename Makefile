# The two commands a newcomer runs (README): `make demo` and `make test`.
# Both install missing system packages first (scripts/install-deps.sh).
SHELL    := /bin/bash
GO       ?= go
GOBIN    := $(shell $(GO) env GOPATH)/bin
BIN      := bin/provstick
FUZZTIME ?= 5s
export PATH := $(GOBIN):$(PATH)

.PHONY: all deps build demo test vet lint unit fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/provstick

demo: deps build
	$(BIN) demo

vet:
	$(GO) vet ./...

lint:
	staticcheck ./...

fuzz:
	scripts/fuzz-all.sh $(FUZZTIME)

unit:
	$(GO) test -race -timeout 45m ./...

# go test's summary comes last, so the closing lines are its own.
test: deps vet lint fuzz unit

bench:
	scripts/bench-setupbin.sh

clean:
	rm -rf bin

# --- documentation and packaging (docs/, packaging/) ---
.PHONY: docs release deb

# The CLI and configuration reference under docs/reference, generated from
# the command tree and the Config struct; a test fails when it is stale.
docs:
	$(GO) run ./cmd/provstick gen-docs --dir docs/reference
