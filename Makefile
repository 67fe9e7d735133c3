# The two commands of the README:
#   make run    start the sidecar with its embedded default (three example models, 127.0.0.1 only)
#   make test   go vet, gofmt check and go test -race ./... (what CI runs)
#   make chaos  the fault tests of e2e/failover (upstreams killed, slow, flaky, malformed) run longer
#               (CHAOS_DURATION, default 30s each), with their summary table; only there are recovery times asserted (-tags chaos)
#   make bench  the load harness (sidecar bench): the sidecar against a no-op server and ONNX
#               Runtime; a few minutes (refuses any result the prediction cache answered outside cache-hit); flags in ARGS, e.g. make bench ARGS="-only floor,adaptive"
#   make demo-migration  the seed's HTTP-versus-gRPC A/B end to end (examples/migration): the seed's
#               Python service and the sidecar on loopback, a migration through every stage to done,
#               then one rolled back by its disagreement gate; under 3 minutes; flags in ARGS (e.g. -quick)
#   make demo-drift  drift seen in seconds (examples/drift): the sidecar on loopback with short drift
#               windows, traffic drawn like the training data, then one feature shifted; its gauge
#               crosses, the others stay below, the webhook gets the alert; about a minute; flags in ARGS (e.g. -quick)
# Both fetch ONNX Runtime's library on first use (scripts/fetch-onnxruntime.sh, cached in the
# git-ignored .onnxruntime/).

SHELL := /bin/bash
GO ?= go
ORT = $(shell scripts/fetch-onnxruntime.sh | tail -n 1)

.PHONY: run test bench chaos demo-migration demo-drift vet fmt-check build proto models onnxruntime python-grpc grpcurl promtool

onnxruntime:
	@scripts/fetch-onnxruntime.sh >/dev/null

# Debian's python3-grpcio for the seed's Python service, a real upstream in the tests.
python-grpc:
	@scripts/ensure-python-grpc.sh >/dev/null

# grpcurl, with which e2e/readme_test.go runs the README's gRPC examples (installed once with go
# install into the git-ignored .tools/bin; go.mod does not change).
GRPCURL_BIN = $(shell scripts/ensure-grpcurl.sh 2>/dev/null | tail -n 1)
grpcurl:
	@scripts/ensure-grpcurl.sh >/dev/null

# promtool, with which e2e/prometheus_test.go checks and unit tests examples/prometheus/'s rules
# (Debian's prometheus package, installed as root without starting its service).
PROMTOOL_BIN = $(shell scripts/ensure-promtool.sh 2>/dev/null | tail -n 1)
promtool:
	@scripts/ensure-promtool.sh >/dev/null

run: onnxruntime build
	ONNXRUNTIME_LIB="$(ORT)" exec bin/sidecar serve $(ARGS)

build:
	$(GO) build -o bin/sidecar ./cmd/sidecar

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "not gofmt'ed (run gofmt -w):"; echo "$$out"; exit 1; fi

test: onnxruntime python-grpc grpcurl promtool vet fmt-check
	ONNXRUNTIME_LIB="$(ORT)" GRPCURL="$(GRPCURL_BIN)" PROMTOOL="$(PROMTOOL_BIN)" $(GO) test -race -count=1 ./...

CHAOS_DURATION ?= 30s
chaos: onnxruntime python-grpc
	@echo "chaos: compiling the tests; then each scenario prints a line as it starts and one as it ends"
	set -o pipefail; ONNXRUNTIME_LIB="$(ORT)" CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -tags chaos -count=1 -timeout 30m -v ./e2e/failover/ \
		| grep --line-buffered -E '^(chaos |\||--- |FAIL|ok|PASS| )'

bench: onnxruntime
	ONNXRUNTIME_LIB="$(ORT)" $(GO) run ./cmd/sidecar bench $(ARGS)

demo-migration: onnxruntime python-grpc build
	$(GO) run ./examples/migration -sidecar bin/sidecar -onnxruntime "$(ORT)" $(ARGS)

demo-drift: onnxruntime build
	$(GO) run ./examples/drift -sidecar bin/sidecar -onnxruntime "$(ORT)" $(ARGS)

# Regenerate the committed protobuf code (needs Debian's protobuf-compiler).
proto:
	scripts/gen-proto.sh

# Regenerate the example data, training matrices and models (needs Debian's python3-torch, python3-onnx).
models:
	examples/training/run.sh

# Every fuzz target for a bounded time each (FUZZTIME, default 20s).
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzCanonicalize$$' -fuzztime $(FUZZTIME) ./features/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./features/
	$(GO) test -run '^$$' -fuzz '^FuzzBandwidthJSON$$' -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzProtoRequests$$' -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzRESTInfer$$' -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzProtoLists$$' -fuzztime $(FUZZTIME) ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzInputs$$' -fuzztime $(FUZZTIME) ./backends/oip/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTPBatchResponse$$' -fuzztime $(FUZZTIME) ./backends/legacy/
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshalSnapshotProto$$' -fuzztime $(FUZZTIME) ./features/drift/
	$(GO) test -run '^$$' -fuzz '^FuzzUpstreamMessage$$' -fuzztime $(FUZZTIME) ./backends/legacy/
