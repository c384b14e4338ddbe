#!/usr/bin/env bash
# Prints the path of a clean Debian bookworm root (a tarball made by mmdebstrap
# from Debian's mirror), made once per package list and cached.
#
# Usage: scripts/bookworm-root.sh [PACKAGE...]   (extra packages to --include)
# Cache: $FABNET_CACHE (default ~/.cache/fabnet)/roots/bookworm-<key>.tar, where
# the key is a hash of the variant, mirror and package list (about 170 MB each).
set -euo pipefail

cache=${FABNET_CACHE:-${HOME:-/root}/.cache/fabnet}/roots
mirror=${FABNET_MIRROR:-http://deb.debian.org/debian}
variant=apt
include=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
key=$(printf 'bookworm %s %s %s mmdebstrap-1\n' "$variant" "$mirror" "$include" | sha256sum | cut -c1-16)
root=$cache/bookworm-$key.tar

log() { echo "bookworm-root: $*" >&2; }

if [ -s "$root" ]; then
	log "reusing $root"
	echo "$root"
	exit 0
fi
command -v mmdebstrap >/dev/null || {
	log "mmdebstrap is missing (apt-get install mmdebstrap)"
	exit 1
}
mkdir -p "$cache"
log "making a bookworm root with ${include:-no extra packages} (about 15 s, once)"
tmp=$root.tmp.$$
trap 'rm -f "$tmp"' EXIT
if ! mmdebstrap --quiet --variant="$variant" ${include:+--include="$include"} \
	--format=tar bookworm "$tmp" "$mirror" >"$cache/mmdebstrap.log" 2>&1; then
	log "mmdebstrap failed; the end of $cache/mmdebstrap.log:"
	tail -20 "$cache/mmdebstrap.log" >&2
	exit 1
fi
mv "$tmp" "$root"
echo "$root"
