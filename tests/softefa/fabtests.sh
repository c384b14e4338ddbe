#!/usr/bin/env bash
# libfabric's fabtests on the efa provider over the soft device, on both
# fabrics. Run it through scripts/softefa.sh (which puts the efa-enabled fi_*
# tools first in PATH and sets SOFTEFA_PROFILE):
#   scripts/softefa.sh --profile p5 -- bash tests/softefa/fabtests.sh
# A test a fabric cannot run is not skipped silently: what makes it
# impossible is checked (fi_info has no such interface, or the provider
# refuses the operation) and reported as "n/a" with the reason.
set -uo pipefail
profile=${SOFTEFA_PROFILE:?run this through scripts/softefa.sh}
limit=${SOFTEFA_FABTEST_TIMEOUT:-180}
passed=0 failed=0 na=0

port() { echo $((20000 + (RANDOM % 20000))); }

pair() { # NAME pp|oob COMMAND...: server and client on this host, both must succeed
	local name=$1 style=$2 p s c out sopt copt
	shift 2
	p=$(port)
	out=$(mktemp)
	# fi_pingpong has its own control port; the common/shared.c tests
	# exchange EFA addresses out of band (-E), a host name is no EFA address
	if [ "$style" = pp ]; then sopt=(-B "$p"); copt=(-P "$p"); else sopt=(-E="$p"); copt=(-E="$p"); fi
	timeout "$limit" "$@" "${sopt[@]}" >"$out.s" 2>&1 &
	s=$!
	sleep 0.5
	timeout "$limit" "$@" "${copt[@]}" 127.0.0.1 >"$out.c" 2>&1
	c=$?
	wait $s
	s=$?
	if [ $c -eq 0 ] && [ $s -eq 0 ]; then
		echo "PASS  $profile $name"
		tail -n 3 "$out.c" | sed 's/^/      /'
		passed=$((passed + 1))
	else
		echo "FAIL  $profile $name (client $c, server $s)"
		tail -n 15 "$out.c" "$out.s" | sed 's/^/      /'
		failed=$((failed + 1))
	fi
	rm -f "$out" "$out.s" "$out.c"
}

not_applicable() { # NAME REASON CHECK-COMMAND...: the check proves the reason
	local name=$1 reason=$2
	shift 2
	if "$@" >/dev/null 2>&1; then
		echo "n/a   $profile $name: $reason"
		na=$((na + 1))
	else
		echo "FAIL  $profile $name: expected '$reason', which no longer holds"
		failed=$((failed + 1))
	fi
}

no_info() { ! fi_info "$@" >/dev/null 2>&1; }

has_write=0
fi_info -p efa -f efa-direct -c FI_RMA -v 2>/dev/null | grep -q 'FI_WRITE' && has_write=1
# the provider's own view: device RDMA write shows up as efa-direct FI_RMA writes
[ "$profile" = p5 ] && [ $has_write -eq 0 ] && { echo "FAIL  p5 efa-direct offers no RMA write"; failed=$((failed + 1)); }

# the provider's fabtest of the device's capabilities agrees with the profile
want=0
[ "$profile" = p5 ] || want=1
fi_efa_rdma_checker -o write >/dev/null 2>&1
got=$?
if [ $got -eq $want ]; then
	echo "PASS  $profile fi_efa_rdma_checker -o write: exit $got (device RDMA write $([ $want = 0 ] && echo on || echo off))"
	passed=$((passed + 1))
else
	echo "FAIL  $profile fi_efa_rdma_checker -o write: exit $got, want $want"
	failed=$((failed + 1))
fi

for fabric in efa efa-direct; do
	pair "fi_pingpong -f $fabric (integrity checked)" pp fi_pingpong -p efa -f "$fabric" -e rdm -I 100 -c
	if [ "$fabric" = efa ]; then
		pair "fi_rdm_tagged_bw -f efa (integrity checked)" oob fi_rdm_tagged_bw -p efa -f efa -I 20 -W 8 -v -S all
		pair "fi_rma_bw -o writedata -f efa (integrity checked)" oob fi_rma_bw -p efa -f efa -o writedata -I 20 -W 8 -v -S all
		# libfabric's own EFA tests of RNR: rnr_retry 0, an error completion or a resend
		pair "fi_efa_rnr_read_cq_error" oob fi_efa_rnr_read_cq_error -p efa
		pair "fi_efa_rnr_queue_resend" oob fi_efa_rnr_queue_resend -p efa
	else
		not_applicable "fi_rdm_tagged_bw -f efa-direct" "efa-direct offers no FI_TAGGED" \
			no_info -p efa -f efa-direct -c FI_TAGGED
		if [ "$profile" = p5 ]; then
			pair "fi_rma_bw -o writedata -f efa-direct (integrity checked)" \
				oob fi_rma_bw -p efa -f efa-direct -o writedata -I 20 -W 8 -v -S all
		else
			not_applicable "fi_rma_bw -o writedata -f efa-direct" \
				"p4d has no device RDMA write and efa-direct does not emulate it" \
				no_info -p efa -f efa-direct -c FI_WRITE
		fi
	fi
done
echo "fabtests on $profile: $passed passed, $failed failed, $na not applicable"
[ $failed -eq 0 ]
