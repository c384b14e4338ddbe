#!/usr/bin/env bash
# Installs what fabnet needs to build and test on Debian bookworm.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
	build-essential autoconf automake libtool pkg-config ca-certificates \
	libfabric-dev libfabric-bin libhwloc-dev hwloc libcunit1-dev \
	rdma-core libibverbs-dev librdmacm-dev iproute2 clang valgrind xz-utils \
	>/dev/null
