#!/usr/bin/env bash
# The main job: install, build, then a two-process bandwidth and latency sweep
# through the plugin (loaded with dlopen as NCCL loads it) on tcp and shm.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh
bash scripts/build.sh build
for prov in tcp shm; do
	echo
	echo "== fabnet-perf over provider $prov"
	FABNET_PROVIDER=$prov build/fabnet-perf --plugin build/.libs/libnccl-net-fabnet.so "$@"
done
