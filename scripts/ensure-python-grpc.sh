#!/usr/bin/env bash
# Makes sure Debian's /usr/bin/python3 can import grpc and google.protobuf (what
# examples/legacy/seed_server.py and the tests of backends/legacy need), and prints the interpreter's
# path as the last line on stdout (progress goes to stderr), so callers can do
#
#   PY="$(scripts/ensure-python-grpc.sh | tail -n 1)"
#
# When the modules are missing and this runs as root on a machine with apt-get, it installs Debian's
# python3-grpcio (which pulls in python3-protobuf): `apt-get install -y --no-install-recommends`,
# running `apt-get update` first only if that install fails. Otherwise it says what to install and
# exits 1. $PYTHON overrides the interpreter (default /usr/bin/python3, not the python3 first on
# PATH, which may be another interpreter without Debian's modules).
set -euo pipefail

py="${PYTHON:-/usr/bin/python3}"

say() { echo "ensure-python-grpc: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}
importable() { [[ -x "$py" ]] && "$py" -c 'import grpc, google.protobuf' >/dev/null 2>&1; }

if importable; then
	say "$py imports grpc $("$py" -c 'import grpc; print(grpc.__version__)') and protobuf $("$py" -c 'import google.protobuf as p; print(p.__version__)')"
	echo "$py"
	exit 0
fi

say "$py cannot import grpc and google.protobuf"
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
	die "install Debian's python3-grpcio as root: apt-get install -y --no-install-recommends python3-grpcio"
fi
export DEBIAN_FRONTEND=noninteractive
say "running: apt-get install -y --no-install-recommends python3-grpcio"
if ! apt-get install -y --no-install-recommends python3-grpcio >&2; then
	say "install failed; running: apt-get update, then the install again"
	apt-get update >&2
	apt-get install -y --no-install-recommends python3-grpcio >&2
fi
importable || die "$py still cannot import grpc and google.protobuf after installing python3-grpcio"
say "installed; $py imports grpc $("$py" -c 'import grpc; print(grpc.__version__)')"
echo "$py"
