#!/usr/bin/env bash
# Runs fabnet's functional driver (or a smoke program) under the EFA-contract
# layer, once per provider, and checks the layer's counters afterwards.
#
# Usage: tests/contract/run-plugin.sh [options] PLUGIN.so
#   --layer SO        the layer (default: tests/contract/.libs/libfabnet-efa-contract.so
#                     next to this script)
#   --ft PATH         fabnet-ft binary (default: tests/functional/fabnet-ft of the
#                     current directory); runs --scenario SCENARIO
#   --smoke PATH      instead of fabnet-ft, run PATH PLUGIN.so (exit 0 = pass)
#   --providers LIST  default "tcp shm"
#   --scenario LIST   fabnet-ft scenarios (default: all)
#   --timeout SECS    per provider run (default: 900)
#
# FABNET_CONTRACT_REORDER (default 8) and FABNET_CONTRACT_EAGAIN (default 10)
# apply unless set; every other FABNET_CONTRACT_* / FABNET_* variable is passed
# through. A run passes when the driver passes, the layer counted no contract
# violation, and it was really in the way (it rewrote fi_info entries, and
# reordered completions and injected EAGAINs when those are on).
# Exit status: 0 when every provider passed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
layer=$here/.libs/libfabnet-efa-contract.so
ft=$PWD/tests/functional/fabnet-ft
smoke=
providers="tcp shm"
scenario=all
run_timeout=900
plugin=

while [ $# -gt 0 ]; do
	case $1 in
	--layer) layer=$2; shift 2 ;;
	--ft) ft=$2; shift 2 ;;
	--smoke) smoke=$2; shift 2 ;;
	--providers) providers=$2; shift 2 ;;
	--scenario) scenario=$2; shift 2 ;;
	--timeout) run_timeout=$2; shift 2 ;;
	-h|--help) sed -n '2,21p' "$0"; exit 0 ;;
	-*) echo "run-plugin: unknown option $1" >&2; exit 2 ;;
	*) plugin=$1; shift ;;
	esac
done

if [ -z "$plugin" ] || [ ! -f "$plugin" ]; then
	echo "run-plugin: give the plugin .so (got '${plugin}')" >&2
	exit 2
fi
if [ ! -f "$layer" ]; then
	echo "run-plugin: the layer $layer is not built (tests/contract/build.sh)" >&2
	exit 2
fi
if [ -z "$smoke" ] && [ ! -x "$ft" ]; then
	echo "run-plugin: $ft is not built; pass --ft PATH or --smoke PATH" >&2
	exit 2
fi
export FABNET_CONTRACT_REORDER=${FABNET_CONTRACT_REORDER:-8}
export FABNET_CONTRACT_EAGAIN=${FABNET_CONTRACT_EAGAIN:-10}

counter() { # FILE KEY
	awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' "$1"
}

declare -a summary
failed=0
for prov in $providers; do
	log=$(mktemp "${TMPDIR:-/tmp}/fabnet-contract-$prov.XXXXXX")
	report=$(mktemp "${TMPDIR:-/tmp}/fabnet-contract-report-$prov.XXXXXX")
	: >"$report"
	extra=()
	case $prov in
	sockets) extra=(FI_SOCKETS_PE_WAITTIME=0) ;;
	esac
	echo "=== $prov: reorder window $FABNET_CONTRACT_REORDER, eagain $FABNET_CONTRACT_EAGAIN%" \
		"${FABNET_CONTRACT_CQ_ERROR_EVERY:+, error every $FABNET_CONTRACT_CQ_ERROR_EVERY}"
	if [ -n "$smoke" ]; then
		cmd=("$smoke" "$plugin")
	else
		cmd=("$ft" --plugin "$plugin" --scenario "$scenario")
	fi
	start=$(date +%s)
	env FABNET_PROVIDER="$prov" FABNET_CONTRACT_REPORT="$report" \
		LD_PRELOAD="$layer${LD_PRELOAD:+:$LD_PRELOAD}" "${extra[@]}" \
		timeout --kill-after=30 "$run_timeout" "${cmd[@]}" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	grep -E '^(PASS|FAIL) |^[0-9]+ passed, [0-9]+ failed$|CONTRACT VIOLATION|^recv .* (ok|BAD)$' "$log"
	violations=$(counter "$report" violations)
	rewritten=$(counter "$report" infos_rewritten)
	reordered=$(counter "$report" reordered)
	eagain=$(counter "$report" eagain_injected)
	why=
	[ "$rc" -eq 0 ] || why="driver exit $rc"
	[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${run_timeout}s"
	[ "$violations" -eq 0 ] || why="${why:+$why, }$violations contract violation(s)"
	[ "$rewritten" -gt 0 ] || why="${why:+$why, }the layer was not used (no fi_info rewritten)"
	if [ "$FABNET_CONTRACT_REORDER" != 0 ] && [ "$reordered" -eq 0 ]; then
		why="${why:+$why, }no completion was reordered"
	fi
	if [ "$FABNET_CONTRACT_EAGAIN" != 0 ] && [ "$eagain" -eq 0 ]; then
		why="${why:+$why, }no EAGAIN was injected"
	fi
	stats="violations $violations, reordered $reordered, eagain $eagain, ${secs}s"
	if [ -n "$why" ]; then
		summary+=("FAIL  $prov: $why ($stats; log $log)")
		failed=1
		echo "--- $prov: report"
		cat "$report"
	else
		summary+=("PASS  $prov: $stats")
		rm -f "$log"
	fi
	rm -f "$report"
done

echo
echo "=== summary (layer $layer)"
printf '%s\n' "${summary[@]}"
exit $failed
