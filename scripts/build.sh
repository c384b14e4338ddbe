#!/usr/bin/env bash
# Builds fabnet out of tree. Usage: scripts/build.sh BUILDDIR [CONFIGURE-ARGS...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
dir=$1; shift
mkdir -p "$dir"
cd "$dir"
if [ ! -f Makefile ]; then
	"$top/configure" --enable-werror "$@" >configure.out 2>&1 || { tail -30 configure.out; exit 1; }
fi
make -j"$(nproc)" >make.out 2>&1 || { grep -E 'error|warning' make.out | head -40; tail -20 make.out; exit 1; }
make -j"$(nproc)" check TESTS= >>make.out 2>&1 || { tail -30 make.out; exit 1; }
echo "built in $(pwd)" >&2
