#!/usr/bin/env bash
# The whole test suite: unit tests and the functional suite (tcp, shm, sockets,
# udp, two network namespaces) against Debian's libfabric 1.17 and against
# libfabric 2.1 built from source; the functional suite again under the EFA
# contract layer; libfabric's real efa provider on the soft EFA device
# (tests/softefa); the decoders fuzzed; ASan+UBSan, TSan and valgrind runs; a
# clang -Werror build; the exported symbols; make distcheck; the Debian
# packages in a clean bookworm root; the container image. Ends with
# "N passed, M failed", one count per step; each step says how long it took.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh || exit 1
[ -x configure ] || ./autogen.sh >/dev/null 2>&1

passed=0 failed=0
step() { # NAME COMMAND...
	local name=$1 start=$SECONDS
	shift
	echo "=== $name"
	if "$@"; then
		echo "=== $name: ok ($((SECONDS - start)) s)"; passed=$((passed + 1))
	else
		echo "=== $name: FAILED ($((SECONDS - start)) s)"; failed=$((failed + 1))
	fi
}
echo "=== the whole suite: about 27 minutes (measured on 2 cores shared with other builds;" \
	"the first run also builds libfabric 2.1, about 3 minutes)"

make_check() { # BUILDDIR CONFIGURE-ARGS...
	local dir=$1; shift
	bash scripts/build.sh "$dir" "$@" || return 1
	if (cd "$dir" && make check -j1 >check.out 2>&1); then
		grep -hE '^(PASS|FAIL|SKIP)|passed, .* failed|^unit:' "$dir"/tests/functional/*.log \
			"$dir"/tests/unit/*.log "$dir"/tests/contract/*.log 2>/dev/null | tail -80
	else
		cat "$dir"/tests/*/*.log 2>/dev/null | tail -150
		return 1
	fi
}

contract() { # BUILDDIR [run-plugin options]: the functional suite held to EFA's contract
	local dir=$1; shift
	(cd "$dir" && bash "$top/tests/contract/run-plugin.sh" --layer tests/contract/.libs/libfabnet-efa-contract.so \
		--ft tests/functional/fabnet-ft "$@" \
		.libs/libnccl-net-fabnet.so >contract.out 2>&1)
	local rc=$?
	grep -E '^(PASS|FAIL)  |^# soak' "$dir/contract.out"
	[ $rc -eq 0 ] || tail -60 "$dir/contract.out"
	return $rc
}

exports() {
	local syms want
	syms=$(nm -D --defined-only build-1.17/.libs/libnccl-net-fabnet.so | awk '{print $3}' | sort | tr '\n' ' ')
	want="ncclNetPlugin_v10 ncclNetPlugin_v11 ncclNetPlugin_v12 ncclNetPlugin_v6 ncclNetPlugin_v7 ncclNetPlugin_v8 ncclNetPlugin_v9 "
	echo "exported: $syms"
	[ "$syms" = "$want" ]
}

lf21=$(bash scripts/libfabric-2.1.sh) || { echo "libfabric 2.1 build failed"; exit 1; }
step "make check, libfabric 1.17 (Debian)" make_check build-1.17
step "make check, libfabric 2.1 (source)" make_check build-2.1 --with-libfabric="$lf21"
# peer-death forks survivors and victims with their own settings: it runs in
# make check on every provider; under the layer its timing is not meaningful.
contract_scenarios=sizes,larger-recv,outstanding,grouped,many-comms,reuse,close,garbage-handle,abi,dmabuf,flush,threads,nccl-patterns,nccl-proxy
step "EFA contract layer, libfabric 1.17 (reorder 8, 10% EAGAIN)" contract build-1.17 --scenario "$contract_scenarios"
step "EFA contract layer, libfabric 2.1 (reorder 8, 10% EAGAIN)" contract build-2.1 --scenario "$contract_scenarios"
step "soak (2 GiB, 100k messages, 16 comms) under the EFA contract layer, tcp" \
	contract build-1.17 --providers tcp --scenario soak
rails_contract() { # BUILDDIR: four rails between two namespaces, held to EFA's contract
	(cd "$1" && FABNET_PLUGIN="$PWD/.libs/libnccl-net-fabnet.so" FABNET_FT="$PWD/tests/functional/fabnet-ft" \
		RAILS_CONTRACT_LAYER="$PWD/tests/contract/.libs/libfabnet-efa-contract.so" \
		bash "$top/tests/functional/rails.sh" check)
}
step "rails (4 links between two namespaces) under the EFA contract layer, libfabric 2.1" \
	rails_contract build-2.1
step "softefa: verbs tests and fabtests on the soft EFA device, p4d and p5" bash tests/softefa/run.sh
fabnet_on_softefa() { # fabnet built against the efa-enabled libfabric, its suites on both profiles
	local prefix rc=0
	prefix=$(bash scripts/softefa.sh --print-prefix) || return 1
	bash scripts/build.sh build-softefa-fabnet --with-libfabric="$prefix" || return 1
	(cd build-softefa-fabnet &&
		bash "$top/scripts/softefa.sh" --profile p4d -- bash "$top/tests/softefa/fabnet-efa.sh" \
			functional hostile rails checks) || rc=1
	# the long soak on one profile
	(cd build-softefa-fabnet &&
		bash "$top/scripts/softefa.sh" --profile p5 -- bash "$top/tests/softefa/fabnet-efa.sh" \
			functional fabrics hostile soak rails checks) || rc=1
	return $rc
}
step "fabnet on libfabric's efa provider over the soft EFA device (functional, hostile, soak, rails; p4d, p5)" \
	fabnet_on_softefa
step "fuzzing the decoders" bash scripts/fuzz.sh "${FABNET_FUZZ_SECONDS:-20}"
step "ASan+UBSan, TSan, valgrind" bash scripts/sanitize.sh
step "clang -Werror build" bash scripts/build.sh build-clang CC=clang
step "exported symbols are the plugin tables only" exports
# The GPU end-to-end run's build side (libfabric 2.1 with CUDA, the nvcc-built
# driver, its no-GPU checks, the carry directory): needs a CUDA toolkit, which
# install-deps.sh does not install; without one it is reported as not run.
gpu_e2e_build() {
	if [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
		echo "not run: no CUDA toolkit (nvcc) under ${CUDA_HOME:-/usr/local/cuda}"
		return 0
	fi
	bash scripts/gpu-e2e.sh build >gpu-e2e-build.out 2>&1 || { tail -40 gpu-e2e-build.out; return 1; }
	grep -E 'selftest|packed|FAIL' gpu-e2e-build.out
}
step "GPU end-to-end: build side and no-GPU checks (scripts/gpu-e2e.sh build)" gpu_e2e_build
# The tarball's make check on tcp and shm: it proves the tarball has what the
# tests need; the sockets and udp runs above add nothing to that.
step "make distcheck (release tarball; its make check on tcp and shm)" \
	env FABNET_FT_PROVIDERS="tcp shm" bash scripts/distcheck.sh build-dist
step "Debian packages: build, lintian, install into a clean bookworm root, run, purge" \
	bash scripts/package-test.sh
step "container image (podman, from a bookworm root): fabnet-info, --doctor, fabnet-perf" \
	bash scripts/container-test.sh

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
