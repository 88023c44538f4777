# The two commands a newcomer runs (README): `make demo` and `make test`.
# Both install missing system packages first (scripts/install-deps.sh).
SHELL    := /bin/bash
GO       ?= go
GOBIN    := $(shell $(GO) env GOPATH)/bin
BIN      := bin/provstick
FUZZTIME ?= 5s
export PATH := $(GOBIN):$(PATH)

.PHONY: all deps build demo test vet lint unit fuzz bench soak clean

all: build

deps:
	@scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh

# The agent that boots on the target is static (no libc in the initramfs);
# provstick build finds it next to provstick.
build:
	$(GO) build -o $(BIN) ./cmd/provstick
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/provstick-agent ./initramfs/agent/cmd/provstick-agent

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

# Every benchmark script, each measuring ours and a peer in the same run;
# writes bench/report.md and its charts. BENCH_ONLY="setupbin tlspsk" limits it.
bench: deps
	scripts/bench-all.sh

# The crash loops (store, agent, kiosk) scaled up, with a 2,000-device load;
# ends with one table (lost and duplicated entries must be 0). About 15 min.
soak: deps
	scripts/soak.sh

clean:
	rm -rf bin

# --- documentation and packaging (docs/, packaging/) ---
.PHONY: docs release deb

# The CLI and configuration reference under docs/reference, generated from
# the command tree and the Config struct; a test fails when it is stale.
docs:
	$(GO) run ./cmd/provstick gen-docs --dir docs/reference

# Release builds: static (CGO_ENABLED=0), -trimpath, version, commit and date
# stamped into "provstick version". The date is the commit's (reproducible;
# SOURCE_DATE_EPOCH overrides it). The agent runs on the Intel PCs being
# provisioned, so it is always linux/amd64, whatever the host architecture.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct HEAD 2>/dev/null || date +%s)
DATE      ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
PLATFORMS ?= linux/amd64 linux/arm64
DIST      ?= dist
CLIPKG    := github.com/provstick/provstick/cmd/provstick/cli
LDFLAGS   := -s -w -X $(CLIPKG).Version=$(VERSION) -X $(CLIPKG).Commit=$(COMMIT) -X $(CLIPKG).Date=$(DATE)

release:
	@mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
	  echo "building $(DIST)/provstick_$${os}_$${arch} ($(VERSION))"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' \
	    -o $(DIST)/provstick_$${os}_$${arch} ./cmd/provstick; \
	done
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w' \
	  -o $(DIST)/provstick-agent_linux_amd64 ./initramfs/agent/cmd/provstick-agent
	cd $(DIST) && sha256sum provstick_linux_* provstick-agent_linux_* > SHA256SUMS

# One .deb per release platform (packaging/cmd/mkdeb, nfpm as a library).
# Completions and man pages come from running this machine's own build.
deb: release
	@set -e; host=$(DIST)/provstick_linux_$$($(GO) env GOARCH); debs=; \
	for p in $(PLATFORMS); do arch=$${p#*/}; \
	  deb=$$(SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./packaging/cmd/mkdeb --arch $$arch --version '$(VERSION)' \
	    --binary $(DIST)/provstick_linux_$$arch --agent $(DIST)/provstick-agent_linux_amd64 \
	    --host-binary $$host -o $(DIST)); \
	  echo "built $$deb"; debs="$$debs $${deb#$(DIST)/}"; \
	done; \
	cd $(DIST) && sha256sum provstick_linux_* provstick-agent_linux_* $$debs > SHA256SUMS
