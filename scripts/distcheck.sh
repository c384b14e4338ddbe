#!/usr/bin/env bash
# The release tarball: `make distcheck` (the tarball unpacked read-only, built
# out of tree with --enable-werror, make check run from it, installed and
# uninstalled), then two checks of its contents: every file git tracks is in
# it (but git's own files and CI's), and it is named after configure.ac's
# version. Usage: scripts/distcheck.sh [BUILDDIR] (default build-dist)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
dir=${1:-build-dist}
version=$(sh scripts/version.sh) || exit 1
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
mkdir -p "$dir"
status=0
(cd "$dir" && { [ -f Makefile ] || "$top/configure" >configure.out 2>&1; }) ||
	{ tail -20 "$dir/configure.out"; exit 1; }
echo "distcheck: make distcheck (builds the tarball's tree and runs make check in it: about 4 minutes)"
start=$SECONDS
if (cd "$dir" && nice -n 10 make distcheck >distcheck.out 2>&1); then
	echo "PASS make distcheck ($((SECONDS - start)) s)"
	grep -E '^(PASS|FAIL|SKIP|XFAIL|ERROR):' "$dir/distcheck.out" | sed 's/^/  /'
else
	echo "FAIL make distcheck ($((SECONDS - start)) s); the end of $dir/distcheck.out:"
	grep -E '^(FAIL|ERROR):' "$dir/distcheck.out"
	tail -40 "$dir/distcheck.out"
	exit 1
fi
tarball=$dir/fabnet-$version.tar.gz
if [ -f "$tarball" ]; then
	echo "PASS the tarball is fabnet-$version.tar.gz (configure.ac's version)"
else
	echo "FAIL no $tarball: $(ls "$dir"/*.tar.gz 2>/dev/null)"
	exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	missing=$(comm -13 <(tar -tzf "$tarball" | sed "s|^fabnet-$version/||" | sort) \
		<(git ls-files | grep -Ev '(^|/)\.gitignore$|^\.ci/' | sort))
	if [ -z "$missing" ]; then
		echo "PASS every file git tracks is in the tarball"
	else
		echo "FAIL files git tracks that the tarball lacks (add them to EXTRA_DIST):"
		echo "$missing" | sed 's/^/  /'
		status=1
	fi
else
	echo "SKIP the tarball against git: not a git checkout"
fi
exit $status
