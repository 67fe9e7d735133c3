#!/usr/bin/env bash
# Finds, or fetches once, the ONNX Runtime shared library that backends/onnx loads, and prints its
# path as the last line on stdout (progress goes to stderr), so callers can do
#
#   export ONNXRUNTIME_LIB="$(scripts/fetch-onnxruntime.sh | tail -n 1)"
#
# Order:
#   1. $ONNXRUNTIME_LIB, if set and the file exists;
#   2. the git-ignored cache <repo>/.onnxruntime/libonnxruntime.so.1.30.0;
#   3. otherwise: `npm pack onnxruntime-node@1.30.0` in a temp dir, extract only
#      package/bin/napi-v6/linux/<arch>/libonnxruntime.so.1 from the tarball into the cache, check its
#      SHA-256, and delete the temp dir.
#
# The Go side (backends/onnx.LibraryPath) looks in the same places, in the same order.
set -euo pipefail

version=1.30.0
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache_dir="$repo/.onnxruntime"
cache="$cache_dir/libonnxruntime.so.$version"

say() { echo "fetch-onnxruntime: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# 1. An explicit library.
if [[ -n "${ONNXRUNTIME_LIB:-}" ]]; then
	say "looking at \$ONNXRUNTIME_LIB=$ONNXRUNTIME_LIB"
	if [[ -f "$ONNXRUNTIME_LIB" ]]; then
		echo "$ONNXRUNTIME_LIB"
		exit 0
	fi
	say "\$ONNXRUNTIME_LIB is set but $ONNXRUNTIME_LIB does not exist; trying the cache"
else
	say "\$ONNXRUNTIME_LIB is not set"
fi

# 2. The repository's cache.
say "looking at $cache"
if [[ -f "$cache" ]]; then
	echo "$cache"
	exit 0
fi

# 3. Fetch it from the npm package onnxruntime-node, which ships the official Linux builds.
case "$(uname -s)/$(uname -m)" in
Linux/x86_64 | Linux/amd64)
	arch=x64
	sha256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
	;;
Linux/aarch64 | Linux/arm64)
	arch=arm64
	sha256=1f549d46250b005580b597f4164984aaf75b3bcb9f3aeb07c7f8a8fe60b23c76
	;;
*)
	die "no ONNX Runtime build to fetch for $(uname -s)/$(uname -m); download ONNX Runtime $version for your platform (the official release archive or the onnxruntime Python wheel) and set ONNXRUNTIME_LIB to its libonnxruntime shared library"
	;;
esac
member="package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"

if ! command -v npm >/dev/null 2>&1; then
	die "npm not found, so the library cannot be fetched. Either install npm (Debian: apt-get install -y npm) and run $0 again, or get libonnxruntime.so $version yourself (the official release archive onnxruntime-linux-$arch-$version.tgz from https://github.com/microsoft/onnxruntime/releases, or the onnxruntime Python wheel) and set ONNXRUNTIME_LIB to its path, or copy it to $cache"
fi
for tool in tar sha256sum; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found; install it and run $0 again"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "fetching onnxruntime-node@$version with npm pack (about 113 MB) into $tmp"
# A private npm cache, so the tarball does not also stay in ~/.npm.
(cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "onnxruntime-node@$version" >/dev/null) ||
	die "npm pack onnxruntime-node@$version failed (see npm's message above); check network access to the npm registry, or set ONNXRUNTIME_LIB"
tgz="$tmp/onnxruntime-node-$version.tgz"
[[ -f "$tgz" ]] || die "npm pack did not produce $tgz"

say "extracting $member"
tar -xzf "$tgz" -C "$tmp" "$member" || die "$member is not in the onnxruntime-node@$version tarball"
got="$(sha256sum "$tmp/$member" | cut -d' ' -f1)"
[[ "$got" == "$sha256" ]] || die "$member has SHA-256 $got, expected $sha256; refusing to use it"

mkdir -p "$cache_dir"
# Write under a temporary name and rename, so an interrupted run never leaves a partial library.
cp "$tmp/$member" "$cache.part.$$"
chmod 0644 "$cache.part.$$"
mv -f "$cache.part.$$" "$cache"
say "cached $cache"
echo "$cache"
