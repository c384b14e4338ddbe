#!/usr/bin/env bash
# Runs each libFuzzer target (clang, from Debian) for a bounded time over the
# kept corpus in tests/fuzz/corpus. New inputs go to a scratch directory, so the
# tree stays clean; crashes fail the run. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-30}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
: >"$out/config.h"
flags=(-std=gnu11 -O1 -g -I"$out" -I"$top/include" -I"$top/src" -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all)
status=0
for t in handle msg imm; do
	clang "${flags[@]}" "$top/tests/fuzz/fuzz_$t.c" "$top/src/core/wire.c" -o "$out/fuzz_$t"
	mkdir -p "$out/new_$t"
	if "$out/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/" \
		"$out/new_$t" "$top/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1; then
		runs=$(grep -E '^stat::number_of_executed_units' "$out/$t.log" | awk '{print $2}')
		echo "PASS fuzz_$t: ${runs:-?} executions in ${secs}s, no crash"
	else
		echo "FAIL fuzz_$t"; tail -40 "$out/$t.log"; status=1
	fi
done
exit $status
