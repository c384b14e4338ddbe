#!/usr/bin/env bash
# Fetch libfabric 2.1.0 (with fabtests) from Debian trixie's source archive,
# build it into a cache outside the source tree, and print the install prefix.
#
# The trixie binary package needs a newer glibc than bookworm has, so we build
# the upstream tarball that Debian ships as libfabric_2.1.0.orig.tar.xz. The
# mirror may lack the .dsc, which makes `apt-get source` exit non-zero even
# though the tarball arrived: we trust the pinned sha256, not apt's status.
#
# Usage: scripts/libfabric-2.1.sh            -> prints the prefix on stdout
# Cache: $FABNET_CACHE (default ~/.cache/fabnet)
set -euo pipefail

version=2.1.0
sha256=1a66369772d5bb151737214af1c478993e969cf298e8f9ed369e7a2ab8d8c6df
cache=${FABNET_CACHE:-${HOME:-/root}/.cache/fabnet}
prefix=$cache/libfabric-$version
stamp=$prefix/.fabnet-built-$sha256

log() { echo "libfabric-2.1: $*" >&2; }

if [ -f "$stamp" ] && [ -x "$prefix/bin/fi_info" ]; then
	log "reusing $prefix"
	echo "$prefix"
	exit 0
fi

work=$cache/src-$version
mkdir -p "$work"
tarball=$work/libfabric_$version.orig.tar.xz

have_tarball() {
	[ -f "$tarball" ] && echo "$sha256  $tarball" | sha256sum -c --status
}

if ! have_tarball; then
	log "fetching the source tarball from trixie's deb-src"
	apt_dir=$work/apt
	mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial"
	cat >"$apt_dir/parts/trixie-src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	# APT::Sandbox::User=root: apt cannot hand the download to its _apt user
	# in a directory that user cannot write; root does it, without a warning.
	opts=(-o Dir::Etc::SourceList=/dev/null
	      -o "Dir::Etc::SourceParts=$apt_dir/parts"
	      -o "Dir::State::Lists=$apt_dir/lists"
	      -o APT::Sandbox::User=root)
	apt_log=$work/apt-source.log
	apt-get "${opts[@]}" -qq update >"$apt_log" 2>&1 ||
		{ log "apt-get update for trixie's sources failed:"; tail -5 "$apt_log" >&2; exit 1; }
	# Exits non-zero when the .dsc is missing on the mirror; the checksum decides.
	(cd "$work" && apt-get "${opts[@]}" -qq source --download-only "libfabric=$version-1.1" ||
		apt-get "${opts[@]}" -qq source --download-only libfabric) >>"$apt_log" 2>&1 || true
	if ! have_tarball; then
		log "the tarball is missing or its sha256 is not $sha256; apt said:"
		tail -8 "$apt_log" >&2
		exit 1
	fi
	if grep -q '404' "$apt_log"; then
		log "got the tarball (sha256 checked); the mirror lacks the .dsc and .debian.tar.xz" \
			"that apt also asked for, which are not needed (apt's 404s: $apt_log)"
	fi
fi

log "building libfabric $version and fabtests into $prefix (about 3 minutes on 2 idle cores," \
	"longer under load; once, then cached)"
rm -rf "$work/build" "$prefix"
mkdir -p "$work/build"
tar -C "$work/build" -xf "$tarball"
src=$work/build/libfabric-$version
jobs=$(nproc 2>/dev/null || echo 2)
(
	cd "$src"
	# Debian's orig tarball is the git tree: configure must be generated.
	[ -x configure ] || ./autogen.sh >"$work/autogen.log" 2>&1
	./configure --prefix="$prefix" --disable-psm3 --disable-opx --disable-usnic \
		--disable-psm2 --disable-efa --disable-verbs --enable-debug=no >"$work/configure.log" 2>&1
	make -j"$jobs" >"$work/make.log" 2>&1
	make install >>"$work/make.log" 2>&1
	cd fabtests
	[ -x configure ] || ./autogen.sh >>"$work/autogen.log" 2>&1
	./configure --prefix="$prefix" --with-libfabric="$prefix" >"$work/fabtests-configure.log" 2>&1
	make -j"$jobs" >"$work/fabtests-make.log" 2>&1
	make install >>"$work/fabtests-make.log" 2>&1
) || { log "build failed; see the logs in $work"; exit 1; }
rm -rf "$work/build"
touch "$stamp"
log "built $prefix"
echo "$prefix"
