#!/usr/bin/env bash
# The functional suite that `make check` runs: fabnet-ft once per libfabric
# provider, the soak once on tcp, fabnet-hostile on tcp and shm, then the
# two-namespace test. Exits non-zero if anything failed.
#
# Environment (make check sets the first three):
#   FABNET_PLUGIN        the plugin .so      (default: ./.libs/libnccl-net-fabnet.so)
#   FABNET_FT            the fabnet-ft binary (default: ./tests/functional/fabnet-ft)
#   FABNET_SRCDIR        the source tree      (default: two levels above this script)
#   FABNET_FT_PROVIDERS  providers to run     (default: "tcp shm sockets udp")
#   FABNET_FT_SCENARIO   scenarios to run     (default: all)
#   FABNET_FT_RUN_TIMEOUT seconds per provider run (default: 900)
#   FABNET_FT_NETNS=0    skip the namespace test
#   FABNET_FT_SOAK=0     skip the soak (run once, on tcp, when tcp is in the providers)
#   FABNET_HOSTILE       the fabnet-hostile binary (default: next to fabnet-ft)
#   FABNET_FT_HOSTILE=0  skip fabnet-hostile (run on tcp and shm, where listed)
set -u

# shm names its region after the pid (/dev/shm/PID:0:0); a process killed
# earlier leaves it behind, and a new process that gets the same pid cannot
# open shm. Remove only regions whose owner is gone.
for f in /dev/shm/[0-9]*:0:0; do
	[ -e "$f" ] || continue
	pid=${f#/dev/shm/}; pid=${pid%%:*}
	kill -0 "$pid" 2>/dev/null || rm -f "$f"
done

here=$(cd "$(dirname "$0")" && pwd)
srcdir=${FABNET_SRCDIR:-$(cd "$here/../.." && pwd)}
plugin=${FABNET_PLUGIN:-$PWD/.libs/libnccl-net-fabnet.so}
ft=${FABNET_FT:-$PWD/tests/functional/fabnet-ft}
hostile=${FABNET_HOSTILE:-$(dirname "$ft")/fabnet-hostile}
providers=${FABNET_FT_PROVIDERS:-tcp shm sockets udp}
scenario=${FABNET_FT_SCENARIO:-all}
run_timeout=${FABNET_FT_RUN_TIMEOUT:-900}

declare -a summary
failed=0

if [ ! -f "$plugin" ]; then
	echo "run-suite: the plugin $plugin does not exist (build it first)" >&2
	exit 1
fi
if [ ! -x "$ft" ]; then
	echo "run-suite: $ft is not built (make tests/functional/fabnet-ft)" >&2
	exit 1
fi

echo "run-suite: plugin $plugin"
echo "run-suite: providers: $providers; scenarios: $scenario"

for prov in $providers; do
	echo
	echo "=== provider $prov ==="
	log=$(mktemp "${TMPDIR:-/tmp}/fabnet-ft-$prov.XXXXXX")
	extra=()
	case $prov in
	sockets) extra=(FI_SOCKETS_PE_WAITTIME=0) ;;
	esac
	start=$(date +%s)
	env FABNET_PROVIDER="$prov" "${extra[@]}" \
		timeout --kill-after=30 "$run_timeout" \
		"$ft" --plugin "$plugin" --scenario "$scenario" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	secs=$(( $(date +%s) - start ))
	counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		summary+=("FAIL  $prov: timed out after ${run_timeout}s ${counts:+($counts so far)}")
		failed=1
	elif [ "$rc" -ne 0 ]; then
		summary+=("FAIL  $prov: ${counts:-no summary line} (exit $rc, ${secs}s)")
		failed=1
	elif [ -z "$counts" ]; then
		summary+=("FAIL  $prov: exit 0 but no summary line (${secs}s)")
		failed=1
	else
		summary+=("PASS  $prov: $counts (${secs}s)")
	fi
	rm -f "$log"
done

# One run of a command whose output ends with "N passed, M failed".
# run_counted LABEL ENV... -- CMD...
run_counted() {
	local label=$1 log rc secs counts start
	shift
	local -a envs=()
	while [ "$1" != "--" ]; do
		envs+=("$1")
		shift
	done
	shift
	log=$(mktemp "${TMPDIR:-/tmp}/fabnet-ft-run.XXXXXX")
	start=$(date +%s)
	env "${envs[@]}" timeout --kill-after=30 "$run_timeout" "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	secs=$(( $(date +%s) - start ))
	counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		summary+=("FAIL  $label: timed out after ${run_timeout}s ${counts:+($counts so far)}")
		failed=1
	elif [ "$rc" -ne 0 ]; then
		summary+=("FAIL  $label: ${counts:-no summary line} (exit $rc, ${secs}s)")
		failed=1
	elif [ -z "$counts" ]; then
		summary+=("FAIL  $label: exit 0 but no summary line (${secs}s)")
		failed=1
	else
		summary+=("PASS  $label: $counts (${secs}s)")
	fi
	rm -f "$log"
}

for prov in $providers; do
	[ "$prov" = tcp ] || continue
	echo
	echo "=== soak (provider tcp) ==="
	if [ "${FABNET_FT_SOAK:-1}" = 0 ]; then
		summary+=("SKIP  soak: FABNET_FT_SOAK=0")
	else
		run_counted "soak (tcp)" FABNET_PROVIDER=tcp -- \
			"$ft" --plugin "$plugin" --scenario soak
	fi
done

for prov in $providers; do
	case $prov in tcp|shm) ;; *) continue ;; esac
	echo
	echo "=== fabnet-hostile (provider $prov) ==="
	if [ "${FABNET_FT_HOSTILE:-1}" = 0 ]; then
		summary+=("SKIP  hostile $prov: FABNET_FT_HOSTILE=0")
	elif [ ! -x "$hostile" ]; then
		echo "run-suite: $hostile is not built (make tests/functional/fabnet-hostile)"
		summary+=("FAIL  hostile $prov: $hostile is not built")
		failed=1
	else
		run_counted "hostile $prov" FABNET_PROVIDER="$prov" -- "$hostile"
	fi
done

# The sender takes a larger FABNET_EAGER_MAX than the receiver (two nodes set
# up differently, or an efa-direct endpoint bound by its MTU on one side):
# both must use the smaller limit, agreed at connect time.
for prov in $providers; do
	case $prov in tcp|shm) ;; *) continue ;; esac
	echo
	echo "=== eager limits differ (provider $prov; sender 1 MiB, receiver default) ==="
	run_counted "eager limits differ ($prov)" FABNET_PROVIDER="$prov" \
		FABNET_FT_RANK1_ENV="FABNET_EAGER_MAX=1048576" -- \
		"$ft" --plugin "$plugin" --scenario sizes,grouped,nccl-patterns
done

echo
echo "=== network namespaces ==="
if [ "${FABNET_FT_NETNS:-1}" = 0 ]; then
	summary+=("SKIP  netns: FABNET_FT_NETNS=0")
elif [ "$(id -u)" != 0 ]; then
	echo "SKIP netns: not running as root"
	summary+=("SKIP  netns: not root")
elif ! command -v ip >/dev/null 2>&1; then
	echo "SKIP netns: no ip command"
	summary+=("SKIP  netns: no ip command")
else
	start=$(date +%s)
	FABNET_PLUGIN="$plugin" FABNET_FT="$ft" FABNET_FT_SCENARIO="$scenario" \
		timeout --kill-after=30 "$run_timeout" bash "$srcdir/tests/functional/netns.sh"
	rc=$?
	secs=$(( $(date +%s) - start ))
	case $rc in
	0) summary+=("PASS  netns (tcp across two namespaces, ${secs}s)") ;;
	77) summary+=("SKIP  netns: namespaces unavailable here") ;;
	124|137) summary+=("FAIL  netns: timed out after ${run_timeout}s"); failed=1 ;;
	*) summary+=("FAIL  netns (exit $rc, ${secs}s)"); failed=1 ;;
	esac
fi

echo
echo "=== summary ==="
for line in "${summary[@]}"; do
	echo "$line"
done
if [ "$failed" -ne 0 ]; then
	echo "run-suite: FAILED"
	exit 1
fi
echo "run-suite: all passed"
exit 0
