#!/usr/bin/env bash
# fabnet under real NCCL on one GPU (issue 15), in two halves.
#
#   scripts/gpu-e2e.sh build     Here, no GPU needed: libfabric 2.1 with CUDA (tcp, shm,
#                                rxm; scripts/libfabric-2.1-cuda.sh), fabnet against it,
#                                tests/gpu/gpu-dmabuf, and the collective driver
#                                tests/gpu/nccl-e2e (nvcc). Runs every check that needs
#                                no GPU, packs what the GPU machine needs into
#                                build-e2e-carry/ (printing its size) and ends with the
#                                run side up to its first GPU call, which must skip.
#   scripts/gpu-e2e.sh run [OUT] On the GPU machine, from a tree that carries
#                                build-e2e-carry/: two ranks on one GPU, each its own node
#                                for NCCL (NCCL_HOSTID per rank, NCCL_P2P_DISABLE=1,
#                                NCCL_SHM_DISABLE=1); every collective from 8 B to 1 GiB
#                                checked on the GPU, through fabnet over tcp and over shm
#                                (GDR, dma-buf, forced flush) and through NCCL's Socket
#                                transport, fabnet and Socket alternating as time allows;
#                                tests/gpu/gpu-dmabuf; NCCL's INFO logs and the lines that
#                                prove fabnet was loaded and used; table.md for
#                                docs/performance.md; last, a small fabnet-tcp run with GDR
#                                forced (a note only, see docs/memory.md). Everything goes
#                                to OUT ($OUT); summary.txt says what passed.
#   scripts/gpu-e2e.sh table OUT The table again from OUT's CSV files.
#
# The device-side command (the device tool's run, carry ["build-e2e-carry"], timeout_s 420):
#   bash scripts/gpu-e2e.sh run "$OUT"
# A rerun with what is left of the 15 minutes (at once, while the machine is warm;
# smaller, one round; timeout_s 240):
#   E2E_BUDGET_S=120 E2E_MAX=256M E2E_ROUNDS=1 bash scripts/gpu-e2e.sh run "$OUT"
#
# Environment: E2E_BUDGET_S (300: the first round always runs, later ones only when
# they would end in time),
# E2E_MAX (1G), E2E_ROUNDS (3: most Socket/fabnet-tcp rounds), NCCL_LIB_DIR (the
# directory of libnccl.so.2; default: the torch wheel's nvidia/nccl/lib), CUDA_HOME.
# Exit: 0 all verified, 1 something failed, 77 no GPU (run).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
carry=${E2E_CARRY:-$top/build-e2e-carry}
build=$top/build-e2e
cuda=${CUDA_HOME:-/usr/local/cuda}
log() { echo "gpu-e2e: $*" >&2; }
die() { log "$*"; exit 1; }

# The highest GLIBC_x.y symbol version any of the given ELF files needs.
glibc_needed() {
	objdump -T "$@" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2
}

# ---- build side ------------------------------------------------------------------------

build_driver() {
	local nvcc=$cuda/bin/nvcc
	[ -x "$nvcc" ] || die "$nvcc not found: the driver needs the CUDA toolkit (set CUDA_HOME)"
	[ -f "$cuda/include/nccl.h" ] || die "$cuda/include/nccl.h not found: NCCL's header is needed"
	# sm_80 and sm_90 code plus PTX: the H200 is sm_90. Static CUDA runtime: the
	# GPU machine needs only its driver and the torch wheel's libnccl.so.2.
	"$nvcc" -std=c++17 -O2 -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
		-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
		-gencode arch=compute_90,code=compute_90 -cudart static -I"$top/tests/gpu" \
		-o "$build/tests/gpu/nccl-e2e" "$top/tests/gpu/nccl_e2e.cu" \
		-L"$cuda/lib64" -L"$cuda/lib" -lnccl || die "compiling tests/gpu/nccl_e2e.cu failed"
}

expect_exit() { # WANT TEXT CMD...: CMD exits WANT and prints TEXT
	local want=$1 text=$2 out rc; shift 2
	out=$("$@" 2>&1); rc=$?
	if [ "$rc" -ne "$want" ] || ! grep -qF -- "$text" <<<"$out"; then
		log "FAIL: '$*' exited $rc (want $want) and printed: $out"
		return 1
	fi
	log "ok: $* -> exit $rc, '$text'"
}

# The driver's argument handling and its no-GPU exit, the table script.
check_driver() {
	local e2e=$build/tests/gpu/nccl-e2e bad=0 tmp
	export LD_LIBRARY_PATH=$cuda/lib64:$cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	"$build/tests/gpu/nccl-e2e-selftest" || bad=1
	expect_exit 0 "usage: nccl-e2e" "$e2e" --help || bad=1
	expect_exit 1 "unknown argument" "$e2e" bogus || bad=1
	expect_exit 1 "not a valid value" "$e2e" --ops all_reduce,bogus || bad=1
	expect_exit 1 "not a valid value" "$e2e" --nranks 0 || bad=1
	expect_exit 1 "not a valid value" "$e2e" --max 1X || bad=1
	expect_exit 1 "needs a value" "$e2e" --min || bad=1
	expect_exit 1 "larger than --max" "$e2e" --min 2G --max 1G || bad=1
	expect_exit 1 "not a valid value" "$e2e" --label a,b || bad=1
	if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
		expect_exit 77 "SKIP: no GPU" "$e2e" --probe || bad=1
		expect_exit 77 "SKIP: no GPU" "$e2e" --max 64K || bad=1
	fi
	tmp=$(mktemp -d)
	printf '%s\n' 'sock#1,all_reduce,8,2,-1,20,30.0,0.0003,0.0003,0' \
		'sock#1,all_reduce,1073741824,268435456,-1,2,500000,2.0,2.0,0' \
		'sock#2,all_reduce,1073741824,268435456,-1,2,250000,4.0,4.0,0' \
		'sock#3,all_reduce,1073741824,268435456,-1,2,100000,10.0,10.0,0' >"$tmp/s.csv"
	printf '%s\n' 'fab#1,all_reduce,1073741824,268435456,-1,2,125000,8.0,8.0,0' \
		'fab#1,broadcast,1024,256,1,20,30.0,0.03,0.03,3' >"$tmp/f.csv"
	python3 "$top/scripts/gpu-e2e-table.py" --machine "test" Socket="$tmp/s.csv" \
		fabnet="$tmp/f.csv" >"$tmp/t.md" || bad=1
	# medians (4.0 of 2, 4, 10), the ratio 8/4, a missing cell, a marked wrong row
	if grep -qF '| all_reduce | 1 GiB | 4.00 | 4.00 | 8.00 | 8.00 | 2.00 |' "$tmp/t.md" &&
		grep -qF '| all_reduce | 8 B | 0.00 | 0.00 | – | – | – |' "$tmp/t.md" &&
		grep -qF '| broadcast | 1 KiB | – | – | 0.03 **WRONG** |' "$tmp/t.md" &&
		grep -qF 'Socket 3, fabnet 1' "$tmp/t.md"; then
		log "ok: gpu-e2e-table.py"
	else
		log "FAIL: gpu-e2e-table.py wrote:"; cat "$tmp/t.md" >&2; bad=1
	fi
	rm -rf "$tmp"
	return $bad
}

pack_carry() {
	local prefix=$1 f need size
	rm -rf "$carry"
	mkdir -p "$carry/lib" "$carry/bin"
	cp -L "$prefix/lib/libfabric.so.1" "$build/.libs/libnccl-net-fabnet.so" "$carry/lib/"
	# fabnet's own dependencies, in case the GPU machine lacks them
	for f in $(ldd "$build/.libs/libnccl-net-fabnet.so" | awk '/libhwloc|libudev/ {print $3}'); do
		cp -L "$f" "$carry/lib/"
	done
	# libfabric's CUDA support dlopens "libcudart.so" (unversioned), which CUDA
	# wheels do not ship
	cp -L "$cuda/lib64/libcudart.so.13" "$carry/lib/libcudart.so" ||
		die "no libcudart.so.13 in $cuda/lib64"
	cp "$build/tests/gpu/nccl-e2e" "$build/tests/gpu/gpu-dmabuf" "$build/fabnet-info" \
		"$prefix/bin/fi_info" "$carry/bin/"
	need=$(glibc_needed "$carry"/lib/* "$carry"/bin/*)
	{
		echo "commit=$(git -C "$top" rev-parse HEAD 2>/dev/null)$(git -C "$top" diff --quiet 2>/dev/null || echo -dirty)"
		# shellcheck disable=SC1091
		echo "built=$(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "libfabric=$prefix"
		echo "nvcc=$("$cuda/bin/nvcc" --version | tail -1)"
		echo "glibc_needed=$need"
	} >"$carry/MANIFEST"
	size=$(du -sb "$carry" | cut -f1)
	log "packed $carry: $((size / 1024)) KiB (the device tool carries 64 MiB), needs glibc $need:"
	(cd "$carry" && ls -l lib bin) >&2
	[ "$size" -lt $((60 << 20)) ] || die "the carry directory is over 60 MiB"
}

do_build() {
	local prefix bad=0
	prefix=$(bash "$top/scripts/libfabric-2.1-cuda.sh" --providers tcp,shm,rxm) ||
		die "building libfabric 2.1 with CUDA failed"
	bash "$top/scripts/build.sh" "$build" --with-libfabric="$prefix" || die "building fabnet failed"
	build_driver
	check_driver || bad=1
	pack_carry "$prefix"
	if command -v shellcheck >/dev/null; then
		shellcheck "$top/scripts/gpu-e2e.sh" "$top/scripts/libfabric-2.1-cuda.sh" &&
			log "ok: shellcheck" || bad=1
	else
		log "shellcheck is not installed (apt-get install shellcheck): not run"
	fi
	# the run side on this machine: everything up to the first GPU call
	if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
		local tmp
		tmp=$(mktemp -d)
		expect_exit 77 "SKIP: no GPU" bash "$top/scripts/gpu-e2e.sh" run "$tmp" || bad=1
		rm -rf "$tmp"
	fi
	[ $bad -eq 0 ] || die "FAIL: a check above failed"
	log "build side done. Device command (carry [\"build-e2e-carry\"], timeout_s 420):"
	log "  bash scripts/gpu-e2e.sh run \"\$OUT\""
}

# ---- run side --------------------------------------------------------------------------

find_nccl() {
	local d
	if [ -n "${NCCL_LIB_DIR:-}" ]; then
		echo "$NCCL_LIB_DIR"
		return
	fi
	for d in $(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
		for sub in nvidia/nccl/lib torch/lib; do
			[ -e "$d/$sub/libnccl.so.2" ] && { echo "$d/$sub"; return; }
		done
	done
	for d in "$cuda/lib64" "$cuda/lib" /usr/lib/x86_64-linux-gnu; do
		[ -e "$d/libnccl.so.2" ] && { echo "$d"; return; }
	done
	return 1
}

# Which runs happened and how they ended, for summary.txt and the exit status.
declare -a results
failed=0
record() { # NAME STATUS DETAIL
	results+=("$(printf '%-16s %-5s %s' "$1" "$2" "$3")")
	log "$1: $2 $3"
	case $2 in PASS|SKIP|NOTE) ;; *) failed=1 ;; esac
}

count_lines() { # TEXT FILE...: lines containing TEXT in all the files
	cat "${@:2}" 2>/dev/null | grep -cF -- "$1"
}

# What proves NCCL loaded fabnet and moved the data through it, from the logs.
proof() { # NAME NET
	local name=$1 net=$2
	local logs=("$out/logs/$name".*) f=$out/proof-$name.txt
	grep -hE "NET/Plugin|Using network|via NET/|NCCL_HOSTID|GPU Direct RDMA|fabnet:|NCCL_P2P_DISABLE|NCCL_SHM_DISABLE|DMABUF|WARN" \
		"${logs[@]}" 2>/dev/null | sed -E 's/^[^ ]+ //' | sort | uniq -c | sort -rn >"$f"
	grep -q "Using network $net" "$f" || { echo "NCCL did not say 'Using network $net'"; return 1; }
	grep -q "via NET/$net" "$f" || { echo "no channel went via NET/$net"; return 1; }
	if [ "$net" = fabnet ]; then
		grep -q "Loaded net plugin fabnet" "$f" || { echo "NCCL did not load the fabnet plugin"; return 1; }
	fi
	echo "$(grep -c 'via NET/' "$f") distinct channel lines via NET/$net$(grep -q 'GDRDMA' "$f" && echo ' (GDRDMA)'), $(count_lines 'registered as a dma-buf' "${logs[@]}") dma-buf and $(count_lines 'instead of dma-buf' "${logs[@]}") by-address regMrDmaBuf registrations"
}

declare -A longest # config -> the longest run so far, seconds
run_e2e() { # NAME ROUND NET ENV...: one sweep through nccl-e2e; NET: whom NCCL must use
	local name=$1 round=$2 net=$3 t0 rc detail='' est left; shift 3
	# the first round always runs (it is the proof); later ones only if they fit
	est=$(( ${longest[$name]:-90} * 13 / 10 ))
	if [ "$round" -gt 1 ] && [ $(( $(date +%s) - start + est )) -gt "$budget" ]; then
		record "$name#$round" SKIP "not started: it would take about $est s, past E2E_BUDGET_S=$budget"
		return 1
	fi
	t0=$(date +%s)
	left=$(( budget - (t0 - start) + 120 ))
	env "${common[@]}" "$@" NCCL_DEBUG_FILE="$out/logs/$name.%h.%p.log" \
		"$carry/bin/nccl-e2e" --label "$name#$round" --csv "$out/$name.csv" --max "$max" \
		--budget 1G --iters 20 --stall 60 --timeout $(( left > 120 ? left : 120 )) \
		>>"$out/$name.out" 2>&1
	rc=$?
	longest[$name]=$(( $(date +%s) - t0 > ${longest[$name]:-0} ? $(date +%s) - t0 : ${longest[$name]:-0} ))
	if [ $rc -ne 0 ]; then
		record "$name#$round" FAIL "nccl-e2e exited $rc after $(( $(date +%s) - t0 )) s: $(grep -E 'FAIL|failed|wrong|WARN' "$out/$name.out" | head -3 | tr '\n' ' ')"
		return 1
	fi
	if [ "$round" = 1 ]; then
		if ! detail=$(proof "$name" "$net"); then
			record "$name#$round" FAIL "verified, but $detail (see proof-$name.txt)"
			return 1
		fi
	fi
	record "$name#$round" PASS "every element verified, 8 B..$max, $(( $(date +%s) - t0 )) s${detail:+; $detail}"
}

do_run() {
	out=${1:-${OUT:-}}
	[ -n "$out" ] || die "usage: scripts/gpu-e2e.sh run OUT (or set OUT)"
	mkdir -p "$out/logs" || die "cannot create $out/logs"
	exec > >(tee -a "$out/gpu-e2e.log") 2>&1
	tee_pid=$!
	# let tee write the last lines before the device tool collects OUT
	trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT
	start=$(date +%s)
	budget=${E2E_BUDGET_S:-300}
	max=${E2E_MAX:-1G}
	local rounds=${E2E_ROUNDS:-3} nccl need have lib r
	[ -f "$carry/MANIFEST" ] || die "$carry/MANIFEST is missing: run 'scripts/gpu-e2e.sh build' here and carry build-e2e-carry"
	log "carry: $(tr '\n' ' ' <"$carry/MANIFEST")"
	log "machine: $(uname -srm), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
	need=$(sed -n 's/^glibc_needed=//p' "$carry/MANIFEST")
	have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
	if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
		die "this machine has glibc $have; the carried binaries need $need: build on an older distribution"
	fi
	nccl=$(find_nccl) || die "libnccl.so.2 not found (torch's nvidia/nccl/lib, $cuda/lib64): set NCCL_LIB_DIR"
	export LD_LIBRARY_PATH=$carry/lib:$nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	lib=$(ldd "$carry/bin/nccl-e2e" | awk '/libnccl/ {print $3}')
	log "NCCL: $lib"
	# the first GPU call
	"$carry/bin/nccl-e2e" --probe
	case $? in
	0) ;;
	77) log "SKIP: no GPU on this machine: nothing ran under NCCL"; exit 77 ;;
	*) die "the GPU probe failed" ;;
	esac
	command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,pci.bus_id,memory.total --format=csv,noheader
	for p in tcp shm; do
		FABNET_PROVIDER=$p FABNET_IFACE=lo FABNET_ALLOW_LOOPBACK=1 "$carry/bin/fabnet-info" >"$out/fabnet-info-$p.txt" 2>&1
		grep -E 'device 0|ptrSupport|no CUDA|DMABUF' "$out/fabnet-info-$p.txt"
	done
	# GPU memory through regMrDmaBuf, outside NCCL (shm: tcp offers no FI_HMEM)
	if FABNET_PROVIDER=shm "$carry/bin/gpu-dmabuf" --plugin "$carry/lib/libnccl-net-fabnet.so" >"$out/gpu-dmabuf.out" 2>&1; then
		record gpu-dmabuf PASS "$(grep -h PASS "$out/gpu-dmabuf.out")"
	else
		record gpu-dmabuf FAIL "exit $?: $(tail -3 "$out/gpu-dmabuf.out" | tr '\n' ' ')"
	fi

	# Each rank its own node; one GPU; no NVLS or MNNVL (a single GPU per node);
	# bootstrap, Socket and fabnet's tcp all on lo, so they take the same path.
	# shellcheck disable=SC2054 # commas inside one value
	common=(NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NVLS_ENABLE=0 NCCL_MNNVL_ENABLE=0
		NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET,ENV NCCL_SOCKET_IFNAME=lo)
	local tcp=(NCCL_NET_PLUGIN=fabnet NCCL_NET=fabnet FABNET_PROVIDER=tcp FABNET_IFACE=lo
		FABNET_ALLOW_LOOPBACK=1 NCCL_DMABUF_ENABLE=1)
	local sock=(NCCL_NET_PLUGIN=none NCCL_NET=Socket)
	# shm offers FI_HMEM: GPU buffers (GDR at any distance), dma-bufs, and a flush
	# after every GPU receive (Hopper needs none, so NCCL skips it unless forced)
	local shm=(NCCL_NET_PLUGIN=fabnet NCCL_NET=fabnet FABNET_PROVIDER=shm NCCL_DMABUF_ENABLE=1
		NCCL_NET_GDR_LEVEL=SYS NCCL_NET_GDR_READ=1 NCCL_NET_FORCE_FLUSH=1)
	# the proofs first (each runs whatever the time), the baseline last
	run_e2e fabnet-tcp 1 fabnet "${tcp[@]}"
	run_e2e fabnet-shm 1 fabnet "${shm[@]}"
	run_e2e socket 1 Socket "${sock[@]}"
	# more rounds, alternating, the order flipped each round
	for ((r = 2; r <= rounds; r++)); do
		if [ $((r % 2)) -eq 0 ]; then
			run_e2e socket "$r" Socket "${sock[@]}" || break
			run_e2e fabnet-tcp "$r" fabnet "${tcp[@]}" || break
		else
			run_e2e fabnet-tcp "$r" fabnet "${tcp[@]}" || break
			run_e2e socket "$r" Socket "${sock[@]}" || break
		fi
	done
	tcp_gdr_probe
	make_table "$out"
	printf '%s\n' "${results[@]}" | tee "$out/summary.txt"
	log "$(( $(date +%s) - start )) s in all; results in $out"
	if [ $failed -eq 0 ]; then log "PASS"; else log "FAIL"; fi
	exit $failed
}

# fabnet advertises NCCL_PTR_DMABUF on tcp without NCCL_PTR_CUDA; NCCL counts
# that as GPUDirect support (topo.cc) and, where GDR is allowed, hands it CUDA
# dma-bufs that it must refuse. One small all_reduce with GDR forced says what
# really happens; it does not count towards PASS.
tcp_gdr_probe() {
	local rc note
	if [ $(( $(date +%s) - start + 60 )) -gt "$budget" ]; then
		record tcp-gdr-probe SKIP "no time left in E2E_BUDGET_S=$budget"
		return
	fi
	env "${common[@]}" "${tcp[@]}" NCCL_NET_GDR_LEVEL=SYS \
		NCCL_DEBUG_FILE="$out/logs/tcp-gdr-probe.%h.%p.log" "$carry/bin/nccl-e2e" \
		--label tcp-gdr-probe --ops all_reduce --max 64K --stall 45 --timeout 60 \
		>"$out/tcp-gdr-probe.out" 2>&1
	rc=$?
	note=$(cat "$out"/logs/tcp-gdr-probe.* 2>/dev/null | grep -hE 'GPU Direct RDMA|GDRDMA|cannot be registered|regMrDmaBuf' | sed -E 's/^[^ ]+ //' | sort -u | head -4 | tr '\n' ' ')
	record tcp-gdr-probe NOTE "fabnet tcp with NCCL_NET_GDR_LEVEL=SYS exited $rc: $note"
}

make_table() { # OUT
	local o=$1 cfgs=() gpu machine
	[ -f "$o/socket.csv" ] && cfgs+=("Socket=$o/socket.csv")
	[ -f "$o/fabnet-tcp.csv" ] && cfgs+=("fabnet tcp=$o/fabnet-tcp.csv")
	[ -f "$o/fabnet-shm.csv" ] && cfgs+=("fabnet shm (GDR)=$o/fabnet-shm.csv")
	[ ${#cfgs[@]} -gt 0 ] || { log "no CSV in $o: no table"; return 1; }
	gpu=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
	machine="${gpu:-GPU ?}, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r), $(grep -h '^# nccl-e2e: NCCL' "$o"/*.out 2>/dev/null | head -1 | sed -E 's/.*(NCCL [0-9.]+).*/\1/'), 2 ranks on one GPU over lo, $(date -u +%F)"
	python3 "$top/scripts/gpu-e2e-table.py" --machine "$machine" "${cfgs[@]}" >"$o/table.md" &&
		log "table: $o/table.md"
}

case ${1:-} in
build) do_build ;;
run) shift; do_run "$@" ;;
table) [ -n "${2:-}" ] || die "usage: scripts/gpu-e2e.sh table OUT"; make_table "$2" && cat "$2/table.md" ;;
*) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
	[ "${1:-}" = -h ] || [ "${1:-}" = --help ] ;;
esac
