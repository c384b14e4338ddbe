#!/usr/bin/env bash
# GPU memory through fabnet's regMrDmaBuf, end to end, on a machine with an
# NVIDIA GPU: builds libfabric 2.1 with CUDA support (unless --libfabric names
# one), builds fabnet against it, prints fabnet-info, then runs
# tests/gpu/gpu-dmabuf: two processes each export cuMemAlloc memory as a
# dma-buf, register it with regMrDmaBuf (fd closed right after), move the
# bytes and check every one after cuMemcpyDtoH.
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
cache=${FABNET_CACHE:-${HOME:-/root}/.cache/fabnet}
cuda=${CUDA_HOME:-/usr/local/cuda}
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
	-h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
	# libfabric 2.1 from the same pinned tarball as scripts/libfabric-2.1.sh,
	# with CUDA (loaded at run time) so FI_HMEM_CUDA registrations work.
	for h in cuda.h nvml.h; do
		if [ ! -f "$cuda/include/$h" ]; then
			log "$cuda/include/$h is missing: libfabric's CUDA support includes it" \
				"(nvml.h comes with the toolkit's NVML development package," \
				"cuda-nvml-dev-*). Set CUDA_HOME or pass --libfabric PREFIX."
			exit 1
		fi
	done
	bash scripts/libfabric-2.1.sh >/dev/null || { log "fetching libfabric 2.1 failed"; exit 1; }
	version=2.1.0
	tarball=$cache/src-$version/libfabric_$version.orig.tar.xz
	prefix=$cache/libfabric-$version-cuda
	stamp=$prefix/.fabnet-built-cuda-$(sha256sum "$tarball" | cut -c1-16)
	if [ ! -f "$stamp" ]; then
		work=$cache/src-$version/build-cuda
		log "building libfabric $version with CUDA ($cuda) into $prefix (a few minutes)"
		rm -rf "$work" "$prefix"
		mkdir -p "$work"
		tar -C "$work" -xf "$tarball"
		(
			cd "$work/libfabric-$version"
			[ -x configure ] || ./autogen.sh >"$work/autogen.log" 2>&1
			# efa and verbs are built when rdma-core's headers are present
			./configure --prefix="$prefix" --with-cuda="$cuda" --enable-cuda-dlopen \
				--disable-psm3 --disable-opx --disable-usnic --disable-psm2 \
				--enable-debug=no >"$work/configure.log" 2>&1
			make -j"$(nproc)" >"$work/make.log" 2>&1
			make install >>"$work/make.log" 2>&1
		) || { log "the libfabric build failed; see the logs in $work"; exit 1; }
		touch "$stamp"
	fi
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
