#!/usr/bin/env bash
# The suites under sanitizers: unit and functional tests with ASan+UBSan, the
# functional suite's threaded scenario under TSan, and the functional suite
# under valgrind memcheck. Any report fails the run.
# Usage: scripts/sanitize.sh [LIBFABRIC_PREFIX]   (default: Debian's libfabric)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
lf=()
[ $# -ge 1 ] && lf=(--with-libfabric="$1")
status=0
providers=${FABNET_SAN_PROVIDERS:-"tcp shm"}

step() { echo "=== $*"; }
fail() { echo "=== FAILED: $*"; status=1; }

# ASan + UBSan: unit tests and every functional scenario.
step "ASan+UBSan build"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
bash scripts/build.sh build-asan "${lf[@]}" CFLAGS="$san" LDFLAGS="-fsanitize=address,undefined"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# libfabric itself is not ours: its leaks at exit are not reports about fabnet.
supp=$(mktemp); trap 'rm -f "$supp"' EXIT
printf 'leak:libfabric.so\nleak:libhwloc\nleak:libnl\n' >"$supp"
export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0"
if build-asan/tests/unit/unit-tests >build-asan/unit-san.log 2>&1; then
	step "ASan+UBSan unit tests: $(tail -1 build-asan/unit-san.log)"
else
	cat build-asan/unit-san.log | tail -40; fail "ASan+UBSan unit tests"
fi
for p in $providers; do
	if FABNET_PROVIDER=$p timeout 900 build-asan/tests/functional/fabnet-ft \
		--plugin build-asan/.libs/libnccl-net-fabnet.so --scenario all \
		>build-asan/ft-$p.log 2>&1 && ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' build-asan/ft-$p.log; then
		step "ASan+UBSan functional on $p: $(tail -1 build-asan/ft-$p.log)"
	else
		tail -60 build-asan/ft-$p.log; fail "ASan+UBSan functional on $p"
	fi
done
# The doctor (its probe runs the plugin: ASan-built too) and init's failure paths.
san_clean() { ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error' "$1"; }
for e in FABNET_PROVIDER=shm FI_PROVIDER=no-such-provider FABNET_PROVIDER=efa; do
	rc=0 # the doctor's own exit status is 0, 1 or 2 (its verdict)
	env "$e" NCCL_NET_PLUGIN="$PWD/build-asan/.libs/libnccl-net-fabnet.so" \
		timeout 300 build-asan/fabnet-info --doctor >build-asan/doctor-san.log 2>&1 || rc=$?
	if [ $rc -le 2 ] && san_clean build-asan/doctor-san.log; then
		step "ASan+UBSan fabnet-info --doctor ($e): $(tail -1 build-asan/doctor-san.log)"
	else
		tail -40 build-asan/doctor-san.log; fail "ASan+UBSan fabnet-info --doctor ($e)"
	fi
done
if timeout 300 build-asan/tests/functional/fabnet-nofallback build-asan/.libs/libnccl-net-fabnet.so \
	>build-asan/nofallback-san.log 2>&1 && san_clean build-asan/nofallback-san.log; then
	step "ASan+UBSan no-silent-fallback: $(tail -1 build-asan/nofallback-san.log)"
else
	tail -40 build-asan/nofallback-san.log; fail "ASan+UBSan no-silent-fallback"
fi
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

# TSan: NCCL drives comms from several proxy threads.
step "TSan build"
tsan="-fsanitize=thread -g -O1"
bash scripts/build.sh build-tsan "${lf[@]}" CFLAGS="$tsan" LDFLAGS="-fsanitize=thread"
for p in $providers; do
	if FABNET_PROVIDER=$p TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_signal_unsafe=0" \
		timeout 900 build-tsan/tests/functional/fabnet-ft \
		--plugin build-tsan/.libs/libnccl-net-fabnet.so --scenario threads \
		>build-tsan/ft-$p.log 2>&1 && ! grep -q 'WARNING: ThreadSanitizer' build-tsan/ft-$p.log; then
		step "TSan threads on $p: $(tail -1 build-tsan/ft-$p.log)"
	else
		tail -60 build-tsan/ft-$p.log; fail "TSan threads on $p"
	fi
done

# valgrind memcheck over the functional suite (plain build).
step "valgrind build"
bash scripts/build.sh build-vg "${lf[@]}" CFLAGS="-g -O1"
for p in $providers; do
	if FABNET_PROVIDER=$p FABNET_FT_QUICK=1 timeout 1200 valgrind --error-exitcode=42 --leak-check=full \
		--errors-for-leak-kinds=definite --trace-children=no -q \
		build-vg/tests/functional/fabnet-ft --plugin build-vg/.libs/libnccl-net-fabnet.so \
		--scenario all >build-vg/ft-$p.log 2>&1; then
		step "valgrind functional on $p: $(tail -1 build-vg/ft-$p.log)"
	else
		tail -60 build-vg/ft-$p.log; fail "valgrind functional on $p"
	fi
done
# The doctor under memcheck, its probe (exec'ed) included.
rc=0
NCCL_NET_PLUGIN="$PWD/build-vg/.libs/libnccl-net-fabnet.so" FABNET_PROVIDER=shm timeout 600 \
	valgrind --error-exitcode=42 --leak-check=full --errors-for-leak-kinds=definite -q \
	--trace-children=yes --child-silent-after-fork=yes build-vg/fabnet-info --doctor \
	>build-vg/doctor.log 2>&1 || rc=$?
if [ $rc -le 2 ] && grep -q '^\[ok\] selftest' build-vg/doctor.log; then
	step "valgrind fabnet-info --doctor (shm): $(tail -1 build-vg/doctor.log)"
else
	tail -40 build-vg/doctor.log; fail "valgrind fabnet-info --doctor (shm)"
fi
exit $status
