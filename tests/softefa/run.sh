#!/usr/bin/env bash
# CI: the soft EFA device's verbs-level tests and libfabric's fabtests over it
# (efa and efa-direct fabrics) on the p4d and p5 profiles, and the verbs
# tests again with the device built for ASan+UBSan and for TSan. Builds what
# is missing through scripts/softefa.sh.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
rc=0
prefix=$(bash "$top/scripts/softefa.sh" --print-prefix) || exit 1
for profile in p4d p5; do
	start=$SECONDS
	bash "$top/scripts/softefa.sh" --profile "$profile" -- sefa-test || rc=1
	bash "$top/scripts/softefa.sh" --profile "$profile" -- bash "$top/tests/softefa/fabtests.sh" || rc=1
	echo "softefa on $profile: $((SECONDS - start)) s"
done

sanitized() { # NAME SANITIZERS PROFILE: sefa-test with the device built for them
	local dir=$top/build-softefa-$1 start=$SECONDS
	make -s -C "$top/tests/softefa" O="$dir" RDMA_INC="$prefix/include" CFLAGS="-O1 -g" \
		EXTRA_CFLAGS="-fsanitize=$2 -fno-omit-frame-pointer" LDFLAGS="-fsanitize=$2" || return 1
	# its own libraries, not the plain ones softefa.sh puts first
	bash "$top/scripts/softefa.sh" --profile "$3" -- env LD_LIBRARY_PATH="$dir/lib" \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 TSAN_OPTIONS=halt_on_error=1 "$dir/sefa-test" ||
		return 1
	echo "softefa verbs tests under $2 ($3): $((SECONDS - start)) s"
}
sanitized asan address,undefined p5 || rc=1
sanitized tsan thread p4d || rc=1
exit $rc
