# Troupe build. `make run` starts the demo node; `make test` runs the tests.
SHELL := /bin/bash
GO ?= go
BIN := bin/troupe
TOOLS := $(CURDIR)/.bin
PLUGINS_OUT := wasm-examples/build

# Pinned code generators, fetched through the Go module proxy.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
# The standard NATS CLI, for the interop tests.
NATSCLI_VERSION := v0.5.0

.PHONY: all build run cluster test test-race test-long proto proto-check tools wasm wasm-all toolchains lint bench clean

all: build

build:
	@echo "building $(BIN) (go build: the first build compiles every dependency, a minute or more; Go caches it)"
	$(GO) build -o $(BIN) ./cmd/runtime

## run: start the demo node (bank domain, example plugins) with data in ./data
run: build wasm
	@echo "starting the demo node: data in ./data, API on 127.0.0.1:8080, plugins from $(PLUGINS_OUT)"
	@echo "(the first start compiles the plugins to machine code, 5-30 s on a busy 2-core machine; it is cached in ./data/cache, so later starts take a second or two)"
	PARTNER_API_TOKEN=$${PARTNER_API_TOKEN:-demo-token} ./$(BIN) dev --data-dir ./data --plugins $(PLUGINS_OUT)

## cluster: start three nodes on this machine (deploy/local-cluster.sh); Ctrl-C stops them
cluster: build
	deploy/local-cluster.sh $(BIN) data/cluster

## test: vet, then the whole default suite (unit, integration, end-to-end)
test: wasm $(TOOLS)/nats
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

## test-race: the short suite under the race detector
test-race:
	$(GO) test -count=1 -race -short -timeout 20m ./...

## test-long: soak and crash runs (see docs/testing.md)
test-long: wasm
	TROUPE_LONG=1 $(GO) test -count=1 -timeout 60m ./...

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/nats:
	GOBIN=$(TOOLS) $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)
$(TOOLS)/protoc-gen-connect-go:
	GOBIN=$(TOOLS) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-connect-go $(TOOLS)/nats

## proto: regenerate the Go code in proto/ (never edit *.pb.go by hand)
proto: tools
	cd proto && PATH=$(TOOLS):$$PATH $(TOOLS)/buf lint && PATH=$(TOOLS):$$PATH $(TOOLS)/buf generate

## proto-check: fail when the committed generated code is stale
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated code in proto/ is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto; echo "untracked generated files in proto/: run 'make proto' and commit"; exit 1; }

## wasm: build the example plugins into wasm-examples/build
wasm:
	@if [ -x wasm-examples/build.sh ]; then wasm-examples/build.sh $(PLUGINS_OUT); else mkdir -p $(PLUGINS_OUT); fi

## wasm-all: also build the C, Rust and AssemblyScript examples (after `make toolchains`)
wasm-all:
	wasm-examples/build.sh $(PLUGINS_OUT) all

## toolchains: install the non-Go toolchains the examples need (Debian and npm packages)
toolchains:
	@if [ -x wasm-examples/install-toolchains.sh ]; then wasm-examples/install-toolchains.sh; fi

lint:
	$(GO) vet ./...
	@if GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2 2>/dev/null; then $(TOOLS)/staticcheck ./...; else echo "staticcheck unavailable; skipped"; fi

## bench: the benchmarks behind docs/benchmarks.md
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

clean:
	rm -rf bin $(PLUGINS_OUT)
