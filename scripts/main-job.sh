#!/usr/bin/env bash
# The main job: install, build, then a two-process bandwidth and latency sweep
# through the plugin (loaded with dlopen as NCCL loads it) on tcp and shm.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh
echo "main-job: building fabnet in build/ (about a minute on 2 idle cores)" >&2
bash scripts/build.sh build
for prov in tcp shm; do
	echo
	echo "== fabnet-perf over provider $prov (8 B to 64 MiB, two processes; about a minute)"
	FABNET_PROVIDER=$prov build/fabnet-perf --plugin build/.libs/libnccl-net-fabnet.so "$@"
done
