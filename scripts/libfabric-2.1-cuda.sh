#!/usr/bin/env bash
# Builds libfabric 2.1.0 with CUDA support (the CUDA libraries are loaded at
# run time, so the result also loads on machines without a GPU) from the same
# pinned tarball as scripts/libfabric-2.1.sh, into a cache outside the tree,
# and prints the install prefix. Without CUDA support libfabric refuses every
# FI_HMEM_CUDA registration (-FI_ENOSYS), so fabnet cannot advertise
# NCCL_PTR_CUDA on any provider.
#
# Usage: scripts/libfabric-2.1-cuda.sh [--providers LIST]
#   --providers LIST  only these providers, e.g. tcp,shm,rxm (nothing that
#                     needs rdma-core at run time); default: every provider
#                     this machine's headers allow (efa and verbs included)
# Environment: CUDA_HOME (default /usr/local/cuda), FABNET_CACHE (~/.cache/fabnet).
#
# libfabric's CUDA code includes nvml.h, which comes with the NVML development
# package (cuda-nvml-dev-*), not with every toolkit. It calls three NVML
# functions through dlopen; when the toolkit has no nvml.h we supply a header
# that declares just those (the library itself, libnvidia-ml.so.1, comes with
# the driver and is optional at run time).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${FABNET_CACHE:-${HOME:-/root}/.cache/fabnet}
cuda=${CUDA_HOME:-/usr/local/cuda}
version=2.1.0
providers=
log() { echo "libfabric-2.1-cuda: $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	--providers) providers=$2; shift 2 ;;
	-h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) log "unknown option $1 (see --help)"; exit 1 ;;
	esac
done
case $providers in
*[!a-z0-9,]*) log "--providers $providers: a comma-separated list of provider names"; exit 1 ;;
esac

for h in cuda.h cuda_runtime.h; do
	[ -f "$cuda/include/$h" ] || { log "$cuda/include/$h is missing: set CUDA_HOME to a CUDA toolkit"; exit 1; }
done
bash "$top/scripts/libfabric-2.1.sh" >/dev/null || { log "fetching libfabric $version failed"; exit 1; }
tarball=$cache/src-$version/libfabric_$version.orig.tar.xz
flavor=${providers:+-${providers//,/-}}
prefix=$cache/libfabric-$version-cuda$flavor
stamp=$prefix/.fabnet-built-cuda-$(sha256sum "$tarball" | cut -c1-16)
if [ -f "$stamp" ]; then
	log "reusing $prefix"
	echo "$prefix"
	exit 0
fi

work=$cache/src-$version/build-cuda$flavor
rm -rf "$work" "$prefix"
mkdir -p "$work/include"
cppflags=
if [ ! -f "$cuda/include/nvml.h" ]; then
	log "$cuda/include/nvml.h is missing: using a header that declares the three NVML calls libfabric makes"
	cat >"$work/include/nvml.h" <<'NVML'
/* The part of NVML's API that libfabric 2.1's CUDA code uses (through dlopen). */
#ifndef FABNET_NVML_SUBSET_H
#define FABNET_NVML_SUBSET_H
typedef enum nvmlReturn_enum { NVML_SUCCESS = 0 } nvmlReturn_t;
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount);
nvmlReturn_t nvmlShutdown(void);
#endif
NVML
	cppflags=-I$work/include
fi
only=()
if [ -n "$providers" ]; then
	only=(--enable-only)
	for p in ${providers//,/ }; do only+=("--enable-$p"); done
else
	only=(--disable-psm3 --disable-opx --disable-usnic --disable-psm2)
fi
log "building libfabric $version with CUDA ($cuda${providers:+, providers $providers}) into $prefix (a few minutes)"
tar -C "$work" -xf "$tarball"
(
	cd "$work/libfabric-$version"
	# Debian's orig tarball is the git tree: configure must be generated.
	[ -x configure ] || ./autogen.sh >"$work/autogen.log" 2>&1
	./configure --prefix="$prefix" --with-cuda="$cuda" --enable-cuda-dlopen \
		"${only[@]}" --disable-static --enable-debug=no CPPFLAGS="$cppflags" \
		>"$work/configure.log" 2>&1
	grep -q '^#define HAVE_CUDA 1' config.h
	make -j"$(nproc)" >"$work/make.log" 2>&1
	make install >>"$work/make.log" 2>&1
) || { log "the build failed (or configure found no CUDA); see the logs in $work"; exit 1; }
rm -rf "$work/libfabric-$version"
touch "$stamp"
log "built $prefix"
echo "$prefix"
