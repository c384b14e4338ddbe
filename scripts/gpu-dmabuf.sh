#!/usr/bin/env bash
# GPU memory through fabnet's regMrDmaBuf, end to end, on a machine with an
# NVIDIA GPU: builds libfabric 2.1 with CUDA support (unless --libfabric names
# one), builds fabnet against it, prints fabnet-info, then runs
# tests/gpu/gpu-dmabuf: two processes each export cuMemAlloc memory as a
# dma-buf, register it with regMrDmaBuf (fd closed right after), move the
# bytes and check every one after cuMemcpyDtoH. (scripts/gpu-e2e.sh runs the
# same test, and fabnet under NCCL, from binaries built elsewhere.)
#
# Usage: scripts/gpu-dmabuf.sh [--libfabric PREFIX] [--provider NAME]
#                              [--build DIR] [-- gpu-dmabuf options]
#   --libfabric PREFIX  a libfabric (1.20+, built with CUDA) to use instead
#   --provider NAME     FABNET_PROVIDER for the run (default: fabnet's choice)
#   --build DIR         fabnet build directory (default: build-gpu)
#   gpu-dmabuf options: --size BYTES --offset BYTES --gpu N --dev N --allow-fallback
# Environment: CUDA_HOME (default /usr/local/cuda), FABNET_CACHE (~/.cache/fabnet).
# Exit: 0 verified, 77 skipped (no driver, GPU or dma-buf export), 1 failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
prefix=
provider=${FABNET_PROVIDER:-}
build=$top/build-gpu
log() { echo "gpu-dmabuf.sh: $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	--libfabric) prefix=$2; shift 2 ;;
	--provider) provider=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--) shift; break ;;
	-h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
	*) log "unknown option $1 (see --help)"; exit 1 ;;
	esac
done

have_libcuda() {
	local d path=${LD_LIBRARY_PATH:-}
	ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' && return 0
	for d in ${path//:/ }; do
		[ -e "$d/libcuda.so.1" ] && return 0
	done
	return 1
}

# Cheap check first: without a driver there is nothing to build for.
if ! have_libcuda; then
	log "SKIP: libcuda.so.1 is not installed (no NVIDIA driver on this machine)"
	exit 77
fi

if [ -z "$prefix" ]; then
	# libfabric 2.1 with CUDA (loaded at run time) so FI_HMEM_CUDA registrations work
	prefix=$(bash scripts/libfabric-2.1-cuda.sh) || { log "building libfabric 2.1 with CUDA failed"; exit 1; }
fi
[ -x "$prefix/bin/fi_info" ] || [ -f "$prefix/include/rdma/fabric.h" ] ||
	{ log "$prefix does not look like a libfabric installation"; exit 1; }

bash scripts/build.sh "$build" --with-libfabric="$prefix" || { log "building fabnet failed"; exit 1; }
export LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -n "$provider" ] && export FABNET_PROVIDER=$provider
prog=$build/tests/gpu/gpu-dmabuf
plugin=$build/.libs/libnccl-net-fabnet.so

set +e
"$prog" --probe
rc=$?
[ $rc -eq 0 ] || exit $rc
"$build/fabnet-info" || log "fabnet-info found no usable device (exit $?)"
"$prog" --plugin "$plugin" "$@"
rc=$?
case $rc in
0) log "PASS" ;;
77) log "SKIP" ;;
*) log "FAIL (exit $rc); fabnet-info above says what the plugin advertises and why" ;;
esac
exit $rc
