#!/usr/bin/env bash
# Runs a command on libfabric's real efa provider over softefa, the software
# EFA device of tests/softefa (docs/softefa.md).
#
#   scripts/softefa.sh [--profile p4d|p5] [--devices N] [--] COMMAND...
#   scripts/softefa.sh --print-prefix     prefix of the efa-enabled libfabric 2.1
#   scripts/softefa.sh --build            build what is missing, print nothing
#
# Builds what is missing (cached like scripts/libfabric-2.1.sh): rdma-core 56's
# headers (trixie's source, pinned by sha256), the soft libibverbs.so.1 and
# libefa.so.1, and libfabric 2.1 with efa and fabtests linked against them.
# COMMAND runs with the soft device visible (FI_PROVIDER=efa works; nothing is
# forced), the efa-enabled fi_* tools first in PATH, and a private SOFTEFA_DIR
# removed afterwards. Cache: $FABNET_CACHE (default ~/.cache/fabnet).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

lf_version=2.1.0
lf_sha256=1a66369772d5bb151737214af1c478993e969cf298e8f9ed369e7a2ab8d8c6df
rc_version=56.1
rc_sha256=63ce7f2baa7242c2dbc76375dac957c420187dd27f8c5e148efc07971ee522a8
recipe=1	# bump when the way libfabric is built here changes
cache=${FABNET_CACHE:-${HOME:-/root}/.cache/fabnet}
prefix=$cache/softefa-lf$lf_version-rc$rc_version
stamp=$prefix/.softefa-built-$recipe-${lf_sha256:0:12}-${rc_sha256:0:12}
softlib=${SOFTEFA_BUILD:-$top/build-softefa}

log() { echo "softefa: $*" >&2; }

fetch_source() { # PACKAGE VERSION FILE SHA256 DIR: Debian trixie's orig tarball via apt
	local pkg=$1 ver=$2 file=$3 sum=$4 dir=$5
	[ -f "$dir/$file" ] && echo "$sum  $dir/$file" | sha256sum -c --status && return 0
	log "fetching $file from trixie's deb-src"
	local apt_dir=$dir/apt
	mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial"
	cat >"$apt_dir/parts/trixie-src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/parts"
		-o "Dir::State::Lists=$apt_dir/lists")
	apt-get "${opts[@]}" -qq update >"$dir/apt.log" 2>&1 || { cat "$dir/apt.log" >&2; return 1; }
	# exits non-zero when the .dsc is missing on the mirror: the checksum decides
	(cd "$dir" && apt-get "${opts[@]}" -qq source --download-only "$pkg=$ver" >>"$dir/apt.log" 2>&1) ||
		(cd "$dir" && apt-get "${opts[@]}" -qq source --download-only "$pkg" >>"$dir/apt.log" 2>&1) || true
	if ! echo "$sum  $dir/$file" | sha256sum -c --status 2>/dev/null; then
		log "$dir/$file is missing or its sha256 is not $sum (apt said:)"
		tail -5 "$dir/apt.log" >&2
		return 1
	fi
}

stage_headers() { # rdma-core 56's public verbs and efadv headers into $prefix/include
	[ -f "$prefix/include/infiniband/efadv.h" ] && return 0
	local dir=$cache/src-rdma-core-$rc_version
	mkdir -p "$dir"
	fetch_source rdma-core "$rc_version-1" "rdma-core_$rc_version.orig.tar.gz" "$rc_sha256" "$dir"
	rm -rf "$dir/x" && mkdir -p "$dir/x"
	tar -C "$dir/x" -xzf "$dir/rdma-core_$rc_version.orig.tar.gz"
	local s=$dir/x/rdma-core-$rc_version
	mkdir -p "$prefix/include/infiniband" "$prefix/include/rdma"
	cp "$s"/libibverbs/{arch.h,opcode.h,sa-kern-abi.h,sa.h,verbs.h,verbs_api.h,tm_types.h} \
		"$s/kernel-headers/rdma/ib_user_ioctl_verbs.h" "$s/providers/efa/efadv.h" "$prefix/include/infiniband/"
	cp "$s"/kernel-headers/rdma/{ib_user_verbs.h,ib_user_sa.h} "$prefix/include/rdma/"
	rm -rf "$dir/x"
}

build_softlib() { # the soft device and its tests, into $softlib (fast when up to date)
	make -s -C "$top/tests/softefa" O="$softlib" RDMA_INC="$prefix/include" >&2 ||
		{ log "building the soft device failed"; return 1; }
}

build_libfabric() {
	[ -f "$stamp" ] && [ -x "$prefix/bin/fi_info" ] && return 0
	local work=$cache/src-$lf_version tarball src jobs
	tarball=$work/libfabric_$lf_version.orig.tar.xz
	mkdir -p "$work"
	fetch_source libfabric "$lf_version-1.1" "libfabric_$lf_version.orig.tar.xz" "$lf_sha256" "$work"
	log "building libfabric $lf_version with efa and fabtests into $prefix (several minutes)"
	# libfabric links against the soft libraries by these names and finds
	# them in its own lib/ when nothing overrides LD_LIBRARY_PATH
	mkdir -p "$prefix/lib"
	cp -P "$softlib"/lib/lib{ibverbs,efa}.so* "$prefix/lib/"
	src=$(mktemp -d "$cache/softefa-build.XXXXXX")
	tar -C "$src" -xf "$tarball"
	src=$src/libfabric-$lf_version
	jobs=$(nproc 2>/dev/null || echo 2)
	[ "$jobs" -gt 2 ] || jobs=2
	local lflags="-L$prefix/lib -Wl,-rpath,$prefix/lib -Wl,-rpath-link,$prefix/lib"
	(
		cd "$src"
		[ -x configure ] || ./autogen.sh >"$src/../autogen.log" 2>&1
		./configure --prefix="$prefix" --enable-efa="$prefix" --disable-verbs --disable-psm3 \
			--disable-opx --disable-usnic --disable-psm2 --enable-debug=no LDFLAGS="$lflags" \
			>"$src/../configure.log" 2>&1
		grep -q '^#define HAVE_CAPS_RDMA_WRITE 1' config.h && grep -q '^#define HAVE_EFA_DMABUF_MR 1' config.h ||
			{ echo "efa built without device RDMA write or dma-buf: wrong headers" >&2; exit 1; }
		make -j"$jobs" >"$src/../make.log" 2>&1
		make install >>"$src/../make.log" 2>&1
		cd fabtests
		[ -x configure ] || ./autogen.sh >>"$src/../autogen.log" 2>&1
		./configure --prefix="$prefix" --with-libfabric="$prefix" CPPFLAGS="-I$prefix/include" \
			LDFLAGS="$lflags" >"$src/../fabtests-configure.log" 2>&1
		make -j"$jobs" >"$src/../fabtests-make.log" 2>&1
		make install >>"$src/../fabtests-make.log" 2>&1
	) || { log "build failed; see the logs in $(dirname "$src")"; return 1; }
	rm -rf "$(dirname "$src")"
	touch "$stamp"
	log "built $prefix"
}

ensure_built() {
	mkdir -p "$cache"
	stage_headers
	build_softlib
	build_libfabric
}

profile=${SOFTEFA_PROFILE:-p5}
devices=${SOFTEFA_DEVICES:-1}
while [ $# -gt 0 ]; do
	case $1 in
	--print-prefix) ensure_built; echo "$prefix"; exit 0 ;;
	--build) ensure_built; exit 0 ;;
	--profile) profile=$2; shift 2 ;;
	--profile=*) profile=${1#*=}; shift ;;
	--devices) devices=$2; shift 2 ;;
	--devices=*) devices=${1#*=}; shift ;;
	--) shift; break ;;
	-*) log "unknown option $1"; exit 2 ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { log "usage: $0 [--profile p4d|p5] [--devices N] -- COMMAND..."; exit 2; }
case $profile in p4d | p5) ;; *) log "profile must be p4d or p5, not $profile"; exit 2 ;; esac
ensure_built

own_dir=
if [ -z "${SOFTEFA_DIR:-}" ]; then
	SOFTEFA_DIR=$(mktemp -d /tmp/softefa.XXXXXX)	# short: socket paths live here
	own_dir=$SOFTEFA_DIR
fi
# a Unix datagram socket queues 10 packets by default; more means fewer retries
if [ -w /proc/sys/net/unix/max_dgram_qlen ] && [ "$(cat /proc/sys/net/unix/max_dgram_qlen)" -lt 512 ]; then
	echo 512 >/proc/sys/net/unix/max_dgram_qlen 2>/dev/null || true
fi
export SOFTEFA_PROFILE=$profile SOFTEFA_DEVICES=$devices SOFTEFA_DIR
export SYSFS_PATH=$SOFTEFA_DIR/sysfs
export LD_LIBRARY_PATH=$softlib/lib:$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$prefix/bin:$softlib:$PATH
rc=0
"$@" || rc=$?
[ -z "$own_dir" ] || rm -rf "$own_dir"
exit $rc
