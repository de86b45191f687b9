GO ?= go
BIN := bin/coffer

.PHONY: build build-pkcs11 test demo bench bench-containerd bench-kbs bench-kbs-scaleout fuzz vet attack

# One static binary (no cgo), stamped with the version and commit.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false \
	  -ldflags "-s -w -X github.com/coffer-dev/coffer/internal/cli.Version=$(VERSION) -X github.com/coffer-dev/coffer/internal/cli.Commit=$(COMMIT)" \
	  -o $(BIN) ./cmd/coffer

# The same binary with cgo, for the pkcs11 scheme (PKCS#11 modules are C
# shared libraries, loaded with dlopen): dynamically linked against libc.
build-pkcs11:
	CGO_ENABLED=1 $(GO) build -trimpath -buildvcs=false \
	  -ldflags "-s -w -X github.com/coffer-dev/coffer/internal/cli.Version=$(VERSION) -X github.com/coffer-dev/coffer/internal/cli.Commit=$(COMMIT)" \
	  -o $(BIN) ./cmd/coffer

# The README's test command: unit, integration (external tools skip unless
# COFFER_REQUIRE_EXTERNAL=1) and the seed corpora of every fuzz target.
test:
	$(GO) vet ./...
	$(GO) test -timeout 40m ./...

demo:
	$(GO) run ./cmd/coffer demo

vet:
	$(GO) vet ./...

# Throughput of coffer vs Debian skopeo on a generated 1 GiB single-layer image.
bench: build
	./scripts/bench.sh

# Unpack through containerd: plain vs encrypted (coffer ctd-decoder), 1 GiB layer.
bench-containerd: build
	./scripts/bench-containerd.sh

bench-kbs:
	$(GO) test -run '^$$' -bench '^Benchmark(Handshake|ResourceGET)$$' -benchtime 3s ./kbs/server/

# One process (memory, fs store) vs one and three replicas on PostgreSQL
# (needs Debian's postgresql), 100 concurrent guests.
bench-kbs-scaleout:
	$(GO) test ./kbs/server/ -run '^$$' -bench ScaleOut -benchtime 4000x -args -kbs.clients=100

# Short fuzzing of every target (FUZZTIME per target).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s -parallel 1 $$pkg || exit 1; \
	  done; \
	done

# Replay every attack of the adversarial review (issue 12) against a broker
# and agent started from bin/coffer: one line per attack, exit 1 if any succeeds.
ATTACK_FUZZTIME ?= 20s
attack: build
	$(GO) run ./scripts/attack -coffer $(BIN) -fuzztime $(ATTACK_FUZZTIME)
