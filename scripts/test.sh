#!/usr/bin/env bash
# The whole test suite: unit tests and the functional suite (tcp, shm, sockets,
# udp, two network namespaces) against Debian's libfabric 1.17 and against
# libfabric 2.1 built from source, plus a clang -Werror build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh
[ -x configure ] || ./autogen.sh >/dev/null 2>&1

status=0
run_check() { # NAME BUILDDIR CONFIGURE-ARGS...
	local name=$1 dir=$2; shift 2
	echo "=== $name"
	bash scripts/build.sh "$dir" "$@"
	if (cd "$dir" && make check -j1 >check.out 2>&1); then
		grep -hE '^(PASS|FAIL|SKIP|ERROR|# )|passed, .* failed' "$dir"/tests/functional/*.log "$dir"/tests/unit/*.log 2>/dev/null | tail -60
		echo "=== $name: ok"
	else
		status=1
		cat "$dir"/tests/functional/*.log "$dir"/tests/unit/*.log 2>/dev/null | tail -150
		echo "=== $name: FAILED"
	fi
}

run_check "libfabric 1.17 (Debian), gcc" build-1.17
lf21=$(bash scripts/libfabric-2.1.sh)
run_check "libfabric 2.1 (source), gcc" build-2.1 --with-libfabric="$lf21"

echo "=== clang -Werror build"
if bash scripts/build.sh build-clang CC=clang; then echo "=== clang: ok"; else status=1; fi

echo "=== exported symbols"
syms=$(nm -D --defined-only build-1.17/.libs/libnccl-net-fabnet.so | awk '{print $3}' | sort | tr '\n' ' ')
echo "$syms"
want="ncclNetPlugin_v10 ncclNetPlugin_v11 ncclNetPlugin_v12 ncclNetPlugin_v6 ncclNetPlugin_v7 ncclNetPlugin_v8 ncclNetPlugin_v9 "
if [ "$syms" = "$want" ]; then echo "1 passed, 0 failed"; else echo "unexpected exports"; status=1; fi

exit $status
