#!/usr/bin/env bash
# Several rails between two hosts: two network namespaces joined by N veth
# pairs, one subnet per pair (10.78.K.1/24 <-> 10.78.K.2/24), each end of
# each pair optionally capped with `tc ... tbf` at the same rate. Each rank
# sees its N interfaces as one fabnet device (FABNET_RAIL_GROUPS), provider
# tcp, and the ranks meet over a unix socket.
#
#   rails.sh [check]      fabnet-ft (every scenario but peer-death, or
#                         FABNET_FT_SCENARIO) over 4 uncapped rails, then the
#                         sizes scenario over 3 rails and over 4 rails against
#                         a receiver that has 2 (the sender uses what both
#                         have), every byte verified by fabnet-ft
#   rails.sh bench        fabnet-perf at 16 MiB over 1, 2 and 4 rails of 4
#                         links capped at RAILS_RATE (default 400mbit): one
#                         round with every message verified (--check all),
#                         then RAILS_BENCH_REPS timed rounds (warm-up and last
#                         message verified); prints the median bandwidths and
#                         the ratios to 1 rail (docs/performance.md)
#
# Environment: FABNET_PLUGIN, FABNET_FT, FABNET_PERF (built paths by default),
#   RAILS_RATE (bench: tbf rate per link end), RAILS_BENCH_REPS (3),
#   RAILS_TIMEOUT (600 s per run), RAILS_CONTRACT_LAYER (check: run both ranks
#   under the EFA contract layer, tests/contract/, with completions reordered
#   and EAGAIN injected, and require zero violations).
# Exit: 0 passed, 1 failed, 77 namespaces cannot be created here.
set -u

mode=${1:-check}
plugin=${FABNET_PLUGIN:-$PWD/.libs/libnccl-net-fabnet.so}
ft=${FABNET_FT:-$PWD/tests/functional/fabnet-ft}
perf=${FABNET_PERF:-$PWD/fabnet-perf}
info=${FABNET_INFO:-$PWD/fabnet-info}
rate=${RAILS_RATE:-400mbit}
reps=${RAILS_BENCH_REPS:-3}
limit=${RAILS_TIMEOUT:-600}
nlinks=4

id=$$
ns0=fabnet-rails-$id-a
ns1=fabnet-rails-$id-b
tmp=
pids=()

link_a() { echo "fr$id-$1a"; } # <= 15 characters
link_b() { echo "fr$id-$1b"; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	ip netns del "$ns0" 2>/dev/null
	ip netns del "$ns1" 2>/dev/null
	[ -n "$tmp" ] && [ -z "${RAILS_KEEP:-}" ] && rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
	echo "rails: SKIP: needs root and the ip command"
	exit 77
fi
if ! ip netns add "$ns0" 2>/dev/null; then
	echo "rails: SKIP: cannot create network namespaces here"
	exit 77
fi
set -e
ip netns add "$ns1"
for ns in "$ns0" "$ns1"; do
	ip -n "$ns" link set lo up
done
for k in $(seq 0 $((nlinks - 1))); do
	a=$(link_a "$k")
	b=$(link_b "$k")
	ip link add "$a" type veth peer name "$b"
	ip link set "$a" netns "$ns0"
	ip link set "$b" netns "$ns1"
	ip -n "$ns0" addr add "10.78.$k.1/24" dev "$a"
	ip -n "$ns1" addr add "10.78.$k.2/24" dev "$b"
	ip -n "$ns0" link set "$a" up
	ip -n "$ns1" link set "$b" up
	if [ "$mode" = bench ]; then
		# both directions: data one way, CTS and completions the other
		ip netns exec "$ns0" tc qdisc add dev "$a" root tbf rate "$rate" burst 256kb latency 50ms
		ip netns exec "$ns1" tc qdisc add dev "$b" root tbf rate "$rate" burst 256kb latency 50ms
	fi
done
set +e
for k in $(seq 0 $((nlinks - 1))); do
	for _ in $(seq 50); do
		ip netns exec "$ns0" ping -c1 -W1 "10.78.$k.2" >/dev/null 2>&1 && break
		sleep 0.1
	done
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fabnet-rails.XXXXXX")

groups() { # SIDE(a|b) N: "fr..-0a,fr..-1a,..." for the first N links
	local side=$1 n=$2 out="" k
	for k in $(seq 0 $((n - 1))); do
		out="$out${out:+,}fr$id-$k$side"
	done
	echo "$out"
}

# run2 NAME RAILS_A RAILS_B CMD...: rank 0 in ns0 with RAILS_A rails, rank 1 in
# ns1 with RAILS_B; the command gets --rank R --ctl SOCK appended. Output of
# both ranks goes to $tmp/NAME.{0,1}.
run2() {
	local name=$1 ra=$2 rb=$3 rc=0 r0 r1
	shift 3
	local sock=$tmp/$name.sock layer=()
	if [ -n "${RAILS_CONTRACT_LAYER:-}" ]; then
		layer=(LD_PRELOAD="$RAILS_CONTRACT_LAYER" FABNET_CONTRACT_REORDER=8
			FABNET_CONTRACT_EAGAIN=10 FABNET_CONTRACT_REPORT="$tmp/$name.report")
	fi
	ip netns exec "$ns0" env "${layer[@]}" ${RUN_ENV:-} FABNET_PROVIDER=tcp FABNET_IFACE="$(groups a "$ra")" \
		FABNET_RAIL_GROUPS="$(groups a "$ra")" timeout --kill-after=10 "$limit" \
		"$@" --rank 0 --ctl "$sock" >"$tmp/$name.0" 2>&1 &
	local p0=$!
	ip netns exec "$ns1" env "${layer[@]}" ${RUN_ENV:-} FABNET_PROVIDER=tcp FABNET_IFACE="$(groups b "$rb")" \
		FABNET_RAIL_GROUPS="$(groups b "$rb")" timeout --kill-after=10 "$limit" \
		"$@" --rank 1 --ctl "$sock" >"$tmp/$name.1" 2>&1 &
	local p1=$!
	pids=("$p0" "$p1")
	wait "$p0"; r0=$?
	wait "$p1"; r1=$?
	pids=()
	[ $r0 -eq 0 ] && [ $r1 -eq 0 ] || rc=1
	return $rc
}

rx_bytes() { # LINK-INDEX: bytes received by rank 0's end of that link
	ip netns exec "$ns0" cat "/sys/class/net/$(link_a "$1")/statistics/rx_bytes"
}

if [ "$mode" = check ]; then
	scen=${FABNET_FT_SCENARIO:-sizes,larger-recv,outstanding,grouped,many-comms,reuse,close,garbage-handle,abi,dmabuf,flush,threads}
	failed=0
	# fabnet-info shows what NCCL will see: the 4 links as one device
	out=$(ip netns exec "$ns0" env FABNET_PROVIDER=tcp FABNET_IFACE="$(groups a 4)" \
		FABNET_RAIL_GROUPS="$(groups a 4)" "$info" --json |
		python3 -c 'import json, sys; d = json.load(sys.stdin)["nccl_devices"]; print(len(d), len(d[0]["rails"]))')
	echo "rails: fabnet-info: NCCL devices and rails of the first: $out"
	[ "$out" = "1 4" ] || { echo "rails: fabnet-info does not show one device of 4 rails"; failed=1; }
	# NAME:RANK0 RAILS:RANK1 RAILS:SCENARIOS[:ENV]; the last one keeps every
	# rail nearly full (8 KiB in flight, 4 KiB writes): sends wait for rails
	for spec in "4-rails:4:4:$scen" "3-rails:3:3:sizes,grouped" "4-to-2-rails:2:4:sizes,outstanding" \
		"4-rails-full:4:4:sizes,outstanding,grouped,many-comms:FABNET_RAIL_INFLIGHT=8192 FABNET_CHUNK_SIZE=4096"; do
		IFS=: read -r name ra rb sc RUN_ENV <<<"$spec"
		used=$((ra < rb ? ra : rb))
		echo "rails: $name: receiver $ra rails, sender $rb, both use $used: $sc"
		before=()
		for k in $(seq 0 $((nlinks - 1))); do before[k]=$(rx_bytes "$k"); done
		if run2 "$name" "$ra" "$rb" "$ft" --plugin "$plugin" --scenario "$sc"; then
			grep -hE '^(PASS|SKIP)' "$tmp/$name.0" | sed 's/^/  /'
		else
			echo "rails: $name FAILED"
			tail -n 40 "$tmp/$name.0" "$tmp/$name.1"
			failed=1
		fi
		if [ -n "${RAILS_CONTRACT_LAYER:-}" ]; then
			v=$(awk '$1 == "violations" { s += $2 } END { print s + 0 }' "$tmp/$name.report" 2>/dev/null)
			r=$(awk '$1 == "reordered" { s += $2 } END { print s + 0 }' "$tmp/$name.report" 2>/dev/null)
			echo "  contract layer: $v violations, $r completions reordered"
			if [ "$v" != 0 ] || [ "$r" = 0 ]; then
				echo "rails: $name: the contract layer found violations or was not in the way"
				failed=1
			fi
		fi
		# The data went over every rail both sides have, and over no other:
		# the sizes scenario alone moves well over 64 MiB.
		for k in $(seq 0 $((nlinks - 1))); do
			got=$(( $(rx_bytes "$k") - before[k] ))
			echo "  link $k: $got bytes received"
			if [ "$k" -lt "$used" ] && [ "$got" -lt $((16 << 20)) ]; then
				echo "rails: $name: link $k carried only $got bytes: the rail is not used"
				failed=1
			fi
			if [ "$k" -ge "$used" ] && [ "$got" -gt $((1 << 20)) ]; then
				echo "rails: $name: link $k carried $got bytes but is not a rail of both sides"
				failed=1
			fi
		done
	done
	# A GPUDirect flush reads through every rail a receive may have come in
	# on: a read is ordered only behind its own NIC's writes.
	echo "rails: flush on 4 rails (FABNET_GDR_FLUSH=always)"
	if RUN_ENV="NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET FABNET_GDR_FLUSH=always" \
		run2 flush-rails 4 4 "$ft" --plugin "$plugin" --scenario flush; then
		grep -hE '^(PASS|SKIP)' "$tmp/flush-rails.0" | sed 's/^/  /'
		if ! grep -q "flushes with a read on each of its 4 rails" "$tmp/flush-rails.0"; then
			echo "rails: flush-rails: the receiver did not flush on each of its 4 rails"
			grep -i flush "$tmp/flush-rails.0" | head -n 5
			failed=1
		fi
	else
		echo "rails: flush-rails FAILED"
		tail -n 40 "$tmp/flush-rails.0" "$tmp/flush-rails.1"
		failed=1
	fi
	[ $failed -eq 0 ] && echo "rails: PASS" || echo "rails: FAIL"
	exit $failed
fi

if [ "$mode" != bench ]; then
	echo "usage: rails.sh [check|bench]" >&2
	exit 2
fi

# bench: bandwidth at 16 MiB (window 8) over 1, 2, 4 rails, alternating.
declare -A bw
for rep in $(seq 0 "$reps"); do
	for n in 1 2 4; do
		name=bench-$n-$rep
		# timed runs check the warm-up and the last message; the first round
		# checks every message (--check all rewrites each send buffer, which
		# costs the sender time: its figure is not used)
		check=last
		[ "$rep" = 0 ] && check=all
		if ! run2 "$name" "$n" "$n" "$perf" --plugin "$plugin" -m uni -b 16M -e 16M \
			--iters 12 --warmup 2 --window 8 --check "$check" --json "$tmp/$name.json"; then
			echo "rails: bench over $n rails FAILED"
			tail -n 30 "$tmp/$name.0" "$tmp/$name.1"
			exit 1
		fi
		# every message verified (--check all); the bandwidth from rank 0's JSON
		v=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
r = [x for x in d["results"] if x["mode"] == "uni" and x["size"] == 16777216]
assert d["ok"] and r and r[0]["wrong"] == 0, "not verified"
print("%.4f" % r[0]["algbw_GBps"])' "$tmp/$name.json") || {
			echo "rails: bench over $n rails: no verified result"; exit 1; }
		if [ "$rep" = 0 ]; then
			echo "rails: $n rail(s): every message of a 16 MiB run verified"
			continue
		fi
		bw[$n]="${bw[$n]:-} $v"
		echo "rails: $n rail(s), run $rep: $v GB/s"
	done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m1=$(echo "${bw[1]}" | median)
m2=$(echo "${bw[2]}" | median)
m4=$(echo "${bw[4]}" | median)
echo "rails: links capped at $rate each; 16 MiB, window 8; medians of $reps runs"
printf 'rails: 1 rail %s GB/s, 2 rails %s GB/s (x%.2f), 4 rails %s GB/s (x%.2f)\n' "$m1" "$m2" \
	"$(echo "$m2 / $m1" | bc -l)" "$m4" "$(echo "$m4 / $m1" | bc -l)"
