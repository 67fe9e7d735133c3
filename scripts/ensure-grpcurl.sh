#!/usr/bin/env bash
# Finds, or installs once, grpcurl (what the README's gRPC examples use, and e2e/readme_test.go runs
# them with), and prints its path as the last line on stdout (progress goes to stderr), so callers
# can do
#
#   export GRPCURL="$(scripts/ensure-grpcurl.sh | tail -n 1)"
#
# Order:
#   1. $GRPCURL, if set and executable;
#   2. the git-ignored <repo>/.tools/bin/grpcurl;
#   3. grpcurl on PATH;
#   4. otherwise: `go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3` with GOBIN set to
#      <repo>/.tools/bin (outside the repository's module: go.mod does not change).
# $GO overrides the go command (default go).
set -euo pipefail

version=v1.9.3
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$repo/.tools/bin"
tool="$bin_dir/grpcurl"

say() { echo "ensure-grpcurl: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# 1. An explicit binary.
if [[ -n "${GRPCURL:-}" ]]; then
	if [[ -x "$GRPCURL" ]]; then
		say "using \$GRPCURL=$GRPCURL"
		echo "$GRPCURL"
		exit 0
	fi
	say "\$GRPCURL is set but $GRPCURL is not an executable file; looking further"
fi

# 2. The repository's tools folder.
if [[ -x "$tool" ]]; then
	say "using $tool"
	echo "$tool"
	exit 0
fi

# 3. PATH.
if on_path="$(command -v grpcurl 2>/dev/null)"; then
	say "using $on_path from PATH"
	echo "$on_path"
	exit 0
fi

# 4. Install it.
go="${GO:-go}"
command -v "$go" >/dev/null 2>&1 || die "$go not found; install Go, or install grpcurl $version yourself and set GRPCURL to its path"
mkdir -p "$bin_dir"
say "running: GOBIN=$bin_dir $go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$version"
# From the tools folder, not the repository, so the repository's go.mod is neither read nor changed.
(cd "$bin_dir" && GOBIN="$bin_dir" GOFLAGS=-mod=mod "$go" install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$version" >&2) ||
	die "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$version failed (see go's message above); check access to the Go module proxy, or install grpcurl yourself and set GRPCURL"
[[ -x "$tool" ]] || die "go install succeeded but $tool is missing"
say "installed $tool"
echo "$tool"
