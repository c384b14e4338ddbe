#!/usr/bin/env bash
# Installs what fabnet needs to build and test on Debian bookworm, and each
# PACKAGE given (the package and container tests add theirs). Only missing
# packages are installed, so a second run is instant; apt's chatter goes to a
# log that is shown only when apt fails.
# Usage: scripts/install-deps.sh [PACKAGE...]
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
want=(build-essential autoconf automake libtool pkg-config ca-certificates
      libfabric-dev libfabric-bin libhwloc-dev hwloc libcunit1-dev
      rdma-core libibverbs-dev librdmacm-dev iproute2 clang valgrind xz-utils python3 "$@")
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
log=$(mktemp "${TMPDIR:-/tmp}/fabnet-install-deps.XXXXXX")
echo "install-deps: installing ${#missing[@]} packages with apt (about a minute on a fresh machine)" >&2
if ! { $SUDO apt-get update -qq &&
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	echo "install-deps: apt failed installing ${missing[*]}; the end of its output ($log):" >&2
	tail -20 "$log" >&2
	exit 1
fi
rm -f "$log"
