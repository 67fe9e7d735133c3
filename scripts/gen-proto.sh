#!/usr/bin/env bash
# Regenerates the committed Go code from the .proto files. Needs protoc (Debian's protobuf-compiler);
# installs protoc-gen-go and protoc-gen-go-grpc at the pinned versions into ./.cache/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
bin="$PWD/.cache/bin"
mkdir -p "$bin"
GOBIN="$bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN="$bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
export PATH="$bin:$PATH"
protoc -I proto --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  novacron/ai/ai_service.proto inference/grpc_service.proto
# The seed's proto, exactly as the seed wrote it (no go_package): the Go package is given here.
protoc -I internal/seedpb \
  --go_out=internal/seedpb --go_opt=paths=source_relative --go_opt=Mai_service.proto=github.com/novacron/sidecar/internal/seedpb \
  --go-grpc_out=internal/seedpb --go-grpc_opt=paths=source_relative --go-grpc_opt=Mai_service.proto=github.com/novacron/sidecar/internal/seedpb \
  ai_service.proto
echo "generated: proto/novacron/ai, proto/inference, internal/seedpb"
