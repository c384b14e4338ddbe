#!/bin/sh
# Builds the EFA-contract test layer and its self-test, outside autotools.
#
# Usage: tests/contract/build.sh [CC] [LIBFABRIC_CFLAGS] [LIBFABRIC_LIBS] [OUTDIR]
#   CC                default: cc
#   LIBFABRIC_CFLAGS  default: empty (system headers, e.g. Debian's 1.17);
#                     for libfabric 2.1: "-I$PREFIX/include"
#   LIBFABRIC_LIBS    default: -lfabric; for 2.1: "-L$PREFIX/lib -Wl,-rpath,$PREFIX/lib -lfabric"
#                     (used by the self-test only: the layer never links libfabric,
#                     it finds the one the process loaded)
#   OUTDIR            default: tests/contract/.libs
# Produces OUTDIR/libfabnet-efa-contract.so and OUTDIR/contract-selftest.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
CC=${1:-cc}
LF_CFLAGS=${2:-}
LF_LIBS=${3:--lfabric}
OUT=${4:-$here/.libs}
WARN="-Wall -Wextra -Werror=implicit-function-declaration"
mkdir -p "$OUT"
# shellcheck disable=SC2086
$CC -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden $WARN $LF_CFLAGS ${CFLAGS:-} \
	-o "$OUT/libfabnet-efa-contract.so" \
	"$here/contract_core.c" "$here/contract_fid.c" "$here/contract_cq.c" "$here/contract_reg.c" \
	-ldl -lpthread
# shellcheck disable=SC2086
$CC -std=gnu11 -O2 -g $WARN $LF_CFLAGS ${CFLAGS:-} -o "$OUT/contract-selftest" \
	"$here/selftest.c" $LF_LIBS -ldl -lpthread
echo "$OUT/libfabnet-efa-contract.so"
