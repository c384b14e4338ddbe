#!/usr/bin/env bash
# fabnet on libfabric's real efa provider over the soft EFA device
# (docs/softefa.md). Run it through scripts/softefa.sh from a fabnet build
# configured with --with-libfabric=$(scripts/softefa.sh --print-prefix):
#
#   scripts/softefa.sh --profile p5 -- bash tests/softefa/fabnet-efa.sh [PART...]
#
# PARTs (default: all of them but soak):
#   functional  the functional suite, every scenario, on efa (run-suite.sh)
#   fabrics     on p5 also on the efa fabric (the default there is efa-direct)
#   hostile     fabnet-hostile on efa
#   soak        the soak (2 GiB, 100k messages) on efa
#   rails       every scenario but peer-death over 4 soft devices as 4 rails
#   checks      fabnet-info's fabric choice, emulated RMA, 128-byte ordering and
#               dma-buf decisions; FABNET_EFA_FABRIC; eager data over the MTU
# Environment: FABNET_PLUGIN, FABNET_FT, FABNET_HOSTILE, FABNET_INFO (default:
# the build in the current directory), FABNET_SRCDIR.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
srcdir=${FABNET_SRCDIR:-$(cd "$here/../.." && pwd)}
plugin=${FABNET_PLUGIN:-$PWD/.libs/libnccl-net-fabnet.so}
ft=${FABNET_FT:-$PWD/tests/functional/fabnet-ft}
hostile=${FABNET_HOSTILE:-$(dirname "$ft")/fabnet-hostile}
info=${FABNET_INFO:-$PWD/fabnet-info}
profile=${SOFTEFA_PROFILE:?run this through scripts/softefa.sh}
limit=${FABNET_EFA_TIMEOUT:-900}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(functional fabrics hostile rails checks)
passed=0 failed=0
export FABNET_PROVIDER=efa FABNET_FT_TIMEOUT=${FABNET_FT_TIMEOUT:-60}

result() { # OK? LABEL
	if [ "$1" = 0 ]; then
		echo "PASS  $profile $2"
		passed=$((passed + 1))
	else
		echo "FAIL  $profile $2"
		failed=$((failed + 1))
	fi
}

ft_run() { # LABEL SCENARIOS [ENV...]: fabnet-ft; its last line is "N passed, M failed"
	local label=$1 scen=$2 out rc
	shift 2
	out=$(mktemp)
	env "$@" timeout --kill-after=30 "$limit" "$ft" --plugin "$plugin" --scenario "$scen" >"$out" 2>&1
	rc=$?
	grep -E '^(PASS|FAIL) |passed, ' "$out" | sed 's/^/      /'
	[ $rc -eq 0 ] || grep -E 'NCCL WARN|<warn>' "$out" | head -20 | sed 's/^/      /'
	[ $rc -eq 0 ] || ! rerun_close "$out" "$@" || rc=0
	rm -f "$out"
	result $rc "$label"
}

info_has() { # LABEL PATTERN [ENV...]: fabnet-info prints PATTERN
	local label=$1 pattern=$2 out
	shift 2
	out=$(env "$@" "$info" 2>&1)
	if grep -qE "$pattern" <<<"$out"; then
		result 0 "$label"
	else
		result 1 "$label"
		echo "$out" | sed 's/^/      /' | head -40
	fi
}

# fabnet-ft's "close" races against the peer's close on a fast wire (rank 0
# tests its outstanding irecvs while the sender, having said "posted", closes;
# the CLOSE can arrive first and test() then reports the peer's close). Until
# the scenario waits for the note first, a run whose only failure is "close"
# runs close again once, and says so.
rerun_close() { # LOG ENV...: 0 when close alone failed and passes again
	local log=$1
	shift
	grep -E '^ *FAIL ' "$log" | grep -v 'passed, ' | grep -vqE '^ *FAIL +close' && return 1
	grep -qE '^ *FAIL +close' "$log" || return 1
	echo "      close failed (the known race above): running it again"
	env "$@" timeout --kill-after=30 "$limit" "$ft" --plugin "$plugin" --scenario close 2>&1 |
		grep -E '^(PASS|FAIL) ' | sed 's/^/      /' | grep -q '^ *PASS'
}

all_but_peer_death=sizes,larger-recv,outstanding,grouped,many-comms,reuse,close,garbage-handle,abi,dmabuf,flush,threads
four=efa_0-rdm,efa_1-rdm,efa_2-rdm,efa_3-rdm

for part in "${parts[@]}"; do
	echo "=== $part ($profile)"
	case $part in
	functional)
		log=$(mktemp)
		FABNET_PLUGIN=$plugin FABNET_FT=$ft FABNET_SRCDIR=$srcdir FABNET_FT_PROVIDERS=efa \
			FABNET_FT_NETNS=0 bash "$srcdir/tests/functional/run-suite.sh" >"$log" 2>&1
		rc=$?
		grep -E '^(PASS|FAIL) ' "$log" | sed 's/^/      /'
		[ $rc -eq 0 ] || ! rerun_close "$log" || rc=0
		rm -f "$log"
		result $rc "functional suite on efa (fabric $([ "$profile" = p5 ] && echo efa-direct || echo efa))"
		;;
	fabrics)
		if [ "$profile" = p5 ]; then
			ft_run "functional suite on the efa fabric (FABNET_EFA_FABRIC=efa)" all FABNET_EFA_FABRIC=efa
		fi
		;;
	hostile)
		timeout "$limit" "$hostile" >/tmp/fabnet-efa-hostile.$$ 2>&1
		rc=$?
		grep -E 'passed, ' /tmp/fabnet-efa-hostile.$$ | sed 's/^/      /'
		rm -f /tmp/fabnet-efa-hostile.$$
		result $rc "fabnet-hostile on efa"
		;;
	soak)
		ft_run "soak on efa" soak
		;;
	rails)
		# With devices that may form rails the automatic choice is the efa
		# fabric: on efa-direct a group's second to fourth rails have no AV
		# entry for the sender at the receiver (docs/softefa.md). On p5,
		# libfabric 2.1 refuses writes with immediate data to itself on an
		# endpoint that never sent itself a message (unsolicited write receive:
		# "Inconsistent support status"); the flush scenario's self-connection
		# meets that on the rails that carry only writes: switch the feature off.
		info_has "fabnet-info: four soft devices make one NCCL device of 4 rails" \
			"0: efa_0-rdm\\+efa_1-rdm\\+efa_2-rdm\\+efa_3-rdm +\\(4 rails" SOFTEFA_DEVICES=4 FABNET_RAIL_GROUPS=$four
		info_has "fabnet-info: devices that may form rails use the efa fabric" "chosen: efa$" SOFTEFA_DEVICES=4
		ft_run "4 rails, every byte verified" $all_but_peer_death SOFTEFA_DEVICES=4 FABNET_RAIL_GROUPS=$four \
			FI_EFA_USE_UNSOLICITED_WRITE_RECV=0
		;;
	checks)
		if [ "$profile" = p5 ]; then
			info_has "fabnet-info: efa-direct chosen, the device writes" \
				"chosen: efa-direct" FABNET_EFA_FABRIC=auto
			info_has "fabnet-info: 128-byte in-order writes (LL128 allowed)" "128-byte in-order writes +yes"
			info_has "fabnet-info: FABNET_EFA_FABRIC=efa forces efa, RMA by the device" \
				"chosen: efa$" FABNET_EFA_FABRIC=efa
			ft_run "eager data over the MTU on efa-direct (FABNET_EAGER_MAX=1M)" sizes FABNET_EAGER_MAX=1M
		else
			info_has "fabnet-info: efa chosen, efa-direct lacks RMA" "chosen: efa$"
			info_has "fabnet-info: RMA write emulated by the provider" "write emulated by the provider"
			info_has "fabnet-info: no 128-byte in-order writes, NCCL kept off LL128" "NCCL LL128: kept off"
			info_has "fabnet-info: FABNET_EFA_FABRIC=efa-direct leaves no device, with the reason" \
				"efa-direct offers no FI_MSG\\|FI_RMA endpoint on this device" FABNET_EFA_FABRIC=efa-direct
		fi
		info_has "fabnet-info: no DMABUF from a memfd (EFA imports only real dma-bufs)" \
			"no DMABUF: .*EFA imports only real dma-bufs"
		info_has "fabnet-info: DMABUF when the device takes a memfd as an exporter's buffer" \
			"ptrSupport +HOST\\|DMABUF" SOFTEFA_DMABUF_ACCEPT_MEMFD=1
		ft_run "dma-buf registrations end to end (memfd as the exporter)" dmabuf SOFTEFA_DMABUF_ACCEPT_MEMFD=1
		;;
	*)
		echo "fabnet-efa: unknown part $part" >&2
		exit 2
		;;
	esac
done
echo "fabnet on efa ($profile): $passed passed, $failed failed"
[ $failed -eq 0 ]
