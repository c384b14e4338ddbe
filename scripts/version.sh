#!/bin/sh
# Prints fabnet's version. It has one home, AC_INIT in configure.ac; the man
# pages get it from configure, debian/rules checks debian/changelog against it.
cd "$(dirname "$0")/.." || exit 1
v=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' configure.ac)
[ -n "$v" ] || { echo "version.sh: no AC_INIT version in configure.ac" >&2; exit 1; }
echo "$v"
