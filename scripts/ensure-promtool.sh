#!/usr/bin/env bash
# Finds, or installs once, promtool (Prometheus's rule checker and unit tester, with which
# e2e/prometheus_test.go checks and tests examples/prometheus/), and prints its path as the last
# line on stdout (progress goes to stderr), so callers can do
#
#   export PROMTOOL="$(scripts/ensure-promtool.sh | tail -n 1)"
#
# Order:
#   1. $PROMTOOL, if set and executable;
#   2. promtool on PATH, then /usr/bin/promtool;
#   3. otherwise, as root on a machine with apt-get: Debian's prometheus package (which ships
#      /usr/bin/promtool): `apt-get install -y --no-install-recommends prometheus`, running
#      `apt-get update` first only if that install fails. The package's service is not started:
#      unless /usr/sbin/policy-rc.d already exists (Debian's container images ship one that
#      refuses every start), a temporary one that does is put there for the install and removed
#      after; no Prometheus server is left running. Not root or no apt-get: says what to install
#      and exits 1.
set -euo pipefail

say() { echo "ensure-promtool: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}
works() { "$1" --version >/dev/null 2>&1; }
version() { "$1" --version 2>&1 | head -n 1; }

# 1. An explicit binary.
if [[ -n "${PROMTOOL:-}" ]]; then
	if [[ -x "$PROMTOOL" ]] && works "$PROMTOOL"; then
		say "using \$PROMTOOL=$PROMTOOL ($(version "$PROMTOOL"))"
		echo "$PROMTOOL"
		exit 0
	fi
	say "\$PROMTOOL is set but $PROMTOOL is not a working promtool; looking further"
fi

# 2. PATH, then Debian's place.
for p in "$(command -v promtool 2>/dev/null || true)" /usr/bin/promtool; do
	if [[ -n "$p" && -x "$p" ]] && works "$p"; then
		say "using $p ($(version "$p"))"
		echo "$p"
		exit 0
	fi
done

# 3. Install Debian's prometheus package.
say "promtool not found (not in \$PROMTOOL, on PATH or at /usr/bin/promtool)"
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
	die "install Debian's prometheus package as root (apt-get install -y --no-install-recommends prometheus), or set PROMTOOL to a promtool binary"
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package's postinst from starting a Prometheus server (invoke-rc.d asks policy-rc.d;
# 101 means "action forbidden").
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
	printf '#!/bin/sh\n# ensure-promtool.sh: no service starts while prometheus installs\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
start=$SECONDS
say "running: apt-get install -y --no-install-recommends prometheus"
if ! apt-get install -y --no-install-recommends prometheus >&2; then
	say "install failed; running: apt-get update, then the install again"
	apt-get update >&2
	apt-get install -y --no-install-recommends prometheus >&2
fi
p=/usr/bin/promtool
works "$p" || die "installed Debian's prometheus package but $p does not run"
say "installed in $((SECONDS - start))s; using $p ($(version "$p"))"
echo "$p"
