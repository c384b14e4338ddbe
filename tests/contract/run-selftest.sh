#!/bin/sh
# The layer's self-test as `make check` runs it (from the build directory):
# two endpoints per provider through the layer, without fabnet.
#   FABNET_CONTRACT_LAYER     the layer (default: tests/contract/.libs/libfabnet-efa-contract.so)
#   FABNET_CONTRACT_SELFTEST  the self-test (default: tests/contract/contract-selftest)
#   FABNET_CONTRACT_PROVIDERS providers (default: "tcp shm")
layer=${FABNET_CONTRACT_LAYER:-$PWD/tests/contract/.libs/libfabnet-efa-contract.so}
selftest=${FABNET_CONTRACT_SELFTEST:-$PWD/tests/contract/contract-selftest}
if [ ! -f "$layer" ] || [ ! -x "$selftest" ]; then
	echo "run-selftest: build $layer and $selftest first" >&2
	exit 1
fi
# shellcheck disable=SC2086
LD_PRELOAD="$layer${LD_PRELOAD:+:$LD_PRELOAD}" exec "$selftest" ${FABNET_CONTRACT_PROVIDERS:-tcp shm}
