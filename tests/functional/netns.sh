#!/usr/bin/env bash
# Runs fabnet-ft with its two ranks in two network namespaces joined by a veth
# pair (10.77.0.1/24 <-> 10.77.0.2/24), provider tcp, each rank restricted to
# its veth with FABNET_IFACE. The ranks meet over a unix socket in a temp dir.
# The namespaces are always removed. Needs root and iproute2.
#
# Environment: FABNET_PLUGIN, FABNET_FT (defaults as in run-suite.sh),
#              FABNET_FT_SCENARIO (default all), FABNET_NETNS_TIMEOUT (600 s)
# Exit: 0 passed, 1 failed, 77 namespaces cannot be created here.
set -u

plugin=${FABNET_PLUGIN:-$PWD/.libs/libnccl-net-fabnet.so}
ft=${FABNET_FT:-$PWD/tests/functional/fabnet-ft}
scenario=${FABNET_FT_SCENARIO:-all}
limit=${FABNET_NETNS_TIMEOUT:-600}

id=$$
ns0=fabnet-ft-$id-a
ns1=fabnet-ft-$id-b
veth0=fnv$id-a # <= 15 characters
veth1=fnv$id-b
tmp=
pid0=
pid1=

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	[ -n "$pid0" ] && kill "$pid0" 2>/dev/null
	[ -n "$pid1" ] && kill "$pid1" 2>/dev/null
	ip netns del "$ns0" 2>/dev/null
	ip netns del "$ns1" 2>/dev/null
	ip link del "$veth0" 2>/dev/null
	[ -n "$tmp" ] && rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
	echo "netns: SKIP: needs root and the ip command"
	exit 77
fi
if ! ip netns add "$ns0" 2>/dev/null; then
	echo "netns: SKIP: cannot create network namespaces here"
	exit 77
fi
set -e
ip netns add "$ns1"
ip link add "$veth0" type veth peer name "$veth1"
ip link set "$veth0" netns "$ns0"
ip link set "$veth1" netns "$ns1"
ip -n "$ns0" addr add 10.77.0.1/24 dev "$veth0"
ip -n "$ns1" addr add 10.77.0.2/24 dev "$veth1"
for ns in "$ns0" "$ns1"; do
	ip -n "$ns" link set lo up
done
ip -n "$ns0" link set "$veth0" up
ip -n "$ns1" link set "$veth1" up
set +e

# wait for the link to come up (carrier on both ends)
for _ in $(seq 50); do
	if ip netns exec "$ns0" ping -c1 -W1 10.77.0.2 >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fabnet-netns.XXXXXX")
sock=$tmp/ctl.sock
echo "netns: $ns0 ($veth0 10.77.0.1) <-> $ns1 ($veth1 10.77.0.2), ctl $sock"

ip netns exec "$ns0" env FABNET_PROVIDER=tcp FABNET_IFACE="$veth0" \
	timeout --kill-after=10 "$limit" \
	"$ft" --plugin "$plugin" --rank 0 --ctl "$sock" --scenario "$scenario" &
pid0=$!
ip netns exec "$ns1" env FABNET_PROVIDER=tcp FABNET_IFACE="$veth1" \
	timeout --kill-after=10 "$limit" \
	"$ft" --plugin "$plugin" --rank 1 --ctl "$sock" --scenario "$scenario" &
pid1=$!

wait "$pid0"
rc0=$?
pid0=
wait "$pid1"
rc1=$?
pid1=

if [ "$rc0" -ne 0 ] || [ "$rc1" -ne 0 ]; then
	echo "netns: FAIL (rank 0 exit $rc0, rank 1 exit $rc1)"
	exit 1
fi
echo "netns: PASS"
exit 0
