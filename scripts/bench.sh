#!/usr/bin/env bash
# fabnet against raw libfabric and against the machine, on this machine, in one
# invocation (docs/performance.md explains the method and reads the results).
#
#   bash scripts/bench.sh            (or: make bench)
#
# 1. Ensures the dependencies (iperf3, jq and a build toolchain from Debian; the
#    libfabric 2.1 build with fabtests from scripts/libfabric-2.1.sh) and builds
#    fabnet against that libfabric in build-bench/ (-O2), so fabnet and the raw
#    baselines run on the same library.
# 2. Repeats every measurement BENCH_REPS times, alternating the contenders
#    (fabnet first in odd rounds, raw libfabric first in even rounds):
#      fabnet-perf over tcp and shm: bandwidth at each size (window 8), 8-byte
#        latency (half the median round trip);
#      fabtests fi_rma_bw -o writedata (bandwidth, the receiver's figure) and
#        fi_rdm_pingpong (8-byte latency, one way = half the round trip);
#      the machine: iperf3 over loopback (tcp) and single-thread memcpy (shm,
#        tools/membw.c);
#      message rate (messages/s, one stream, BENCH_RATE_SIZES at each of
#        BENCH_RATE_WINDOWS in flight): fabnet-perf -m uni against fabtests
#        fi_rdm_bw (untagged messages) and fi_rdm_tagged_bw (tagged).
# 3. Prints the medians and the ratios against the goals and writes
#    bench-results.json, bench-results.csv (medians, ratios) and
#    bench-samples.csv (every run) into BENCH_RESULTS.
#
# Settings (environment):
#   BENCH_REPS        rounds per measurement (5)
#   BENCH_SIZES       bandwidth sizes in bytes ("1048576 4194304 16777216")
#   BENCH_BYTES       bytes moved per bandwidth run (1 GiB); iterations =
#                     BENCH_BYTES / size, at least 4 windows
#   BENCH_WINDOW      messages in flight (8)
#   BENCH_LAT_ITERS   8-byte round trips per latency run (10000; fi_rdm_pingpong
#                     runs them as BENCH_LAT_BLOCKS timed blocks)
#   BENCH_LAT_BLOCKS  blocks of the raw ping-pong (20); its result is the median
#                     of the block means
#   BENCH_PROVIDERS   ("tcp shm")
#   BENCH_IPERF_SECS  iperf3 duration (3)
#   BENCH_RESULTS     results directory (build-bench/results)
#   BENCH_BUILD       build directory (build-bench)
#   BENCH_PORT        first out-of-band TCP port (9230); every run takes a new one
#   BENCH_TIMEOUT     seconds any single run may take (90)
#   BENCH_QUIET_WAIT  seconds to wait, before each run, for other processes to
#                     stop using the CPUs (5; 0 = do not wait)
#   BENCH_BUSY_PCT    a run during which other processes used this much of a
#                     core (25 %) ...
#   BENCH_STALL_PCT   ... or during which runnable tasks waited for a CPU this
#                     share of the time (20 %) is marked busy and repeated ...
#   BENCH_RETRIES     ... at most this many times (2)
#   BENCH_BUDGET      seconds after which busy runs are no longer repeated and
#                     nothing waits for quiet CPUs (360), to bound the run time
#   BENCH_SWEEP       1: also one fabnet-perf sweep per provider (lat, uni, bidir,
#                     ring; tables, CSV, JSON and an SVG plot in BENCH_RESULTS)
#   BENCH_RATE_SIZES  message-rate sizes in bytes ("8 1024 8192 65536")
#   BENCH_RATE_WINDOWS messages in flight for the rate ("1 8 64"; fabnet's
#                     comm takes 32 at a time, NCCL's limit: a window of 64
#                     keeps its request pool full)
#   BENCH_RATE_MSGS   messages per rate run (20000)
#   BENCH_PARTS       what to measure ("bw lat rate limits": bandwidth, latency,
#                     message rate, the machine's iperf3 and memcpy)
#   BENCH_SKIP_DEPS=1 do not check or install Debian packages
#   BENCH_PLUGINS     other NCCL net plugins to measure beside fabnet (paths of
#                     libnccl-net-X.so, space-separated): each is a contender
#                     named X, run through the same fabnet-perf, alternated with
#                     fabnet and raw libfabric in every round, and reported with
#                     fabnet/X (bandwidth, goal >= 1) and fabnet - X (latency,
#                     goal <= 0). They run with FI_PROVIDER set to the provider
#                     (and FI_TCP_IFACE to the tcp domain) plus BENCH_PLUGIN_ENV
#                     (say "OFI_NCCL_PROTOCOL=SENDRECV" for aws-ofi-nccl)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

REPS=${BENCH_REPS:-5}
SIZES=${BENCH_SIZES:-"1048576 4194304 16777216"}
BYTES=${BENCH_BYTES:-1073741824}
WINDOW=${BENCH_WINDOW:-8}
LAT_ITERS=${BENCH_LAT_ITERS:-10000}
LAT_BLOCKS=${BENCH_LAT_BLOCKS:-20}
PROVIDERS=${BENCH_PROVIDERS:-"tcp shm"}
IPERF_SECS=${BENCH_IPERF_SECS:-3}
BUILD=${BENCH_BUILD:-build-bench}
RESULTS=${BENCH_RESULTS:-$BUILD/results}
PORT=${BENCH_PORT:-9230}
RUN_TIMEOUT=${BENCH_TIMEOUT:-90}
QUIET_WAIT=${BENCH_QUIET_WAIT:-5}
SWEEP=${BENCH_SWEEP:-1}
PLUGIN_ENV=${BENCH_PLUGIN_ENV:-}
RATE_SIZES=${BENCH_RATE_SIZES:-"8 1024 8192 65536"}
RATE_WINDOWS=${BENCH_RATE_WINDOWS:-"1 8 64"}
RATE_MSGS=${BENCH_RATE_MSGS:-20000}
PARTS=" ${BENCH_PARTS:-bw lat rate limits} "
part() { [[ $PARTS == *" $1 "* ]]; }
# Other plugins as contenders: their names (from libnccl-net-NAME.so) and paths.
EXTRA_NAMES=() EXTRA_PATHS=()
for p in ${BENCH_PLUGINS:-}; do
	[ -f "$p" ] || { echo "bench: BENCH_PLUGINS names $p, which is not a file" >&2; exit 2; }
	n=$(basename "$p" .so); n=${n#libnccl-net-}; n=${n#libnccl-net}; n=${n:-plugin}
	case " fabnet raw iperf3 iperf3-l1M memcpy ${EXTRA_NAMES[*]} " in
	*" $n "*) n="$n-$((${#EXTRA_NAMES[@]} + 1))" ;;
	esac
	EXTRA_NAMES+=("$n") EXTRA_PATHS+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")")
done

case $BUILD in /*) ;; *) BUILD=$top/$BUILD ;; esac
case $RESULTS in /*) ;; *) RESULTS=$top/$RESULTS ;; esac
for v in REPS BYTES WINDOW LAT_ITERS LAT_BLOCKS IPERF_SECS PORT RUN_TIMEOUT QUIET_WAIT RATE_MSGS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v must be a number, not '${!v}'" >&2; exit 2; }
done
for s in $SIZES $RATE_SIZES $RATE_WINDOWS; do
	[[ $s =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_SIZES, BENCH_RATE_SIZES and BENCH_RATE_WINDOWS take positive numbers, not '$s'" >&2; exit 2; }
done
for x in $PARTS; do
	case $x in bw | lat | rate | limits) ;; *) echo "bench: BENCH_PARTS takes bw, lat, rate, limits; not '$x'" >&2; exit 2 ;; esac
done
if [ "$REPS" -lt 1 ] || [ "$WINDOW" -lt 1 ] || [ "$LAT_BLOCKS" -lt 1 ] || [ "$LAT_ITERS" -lt "$LAT_BLOCKS" ]; then
	echo "bench: need BENCH_REPS, BENCH_WINDOW, BENCH_LAT_BLOCKS >= 1 and BENCH_LAT_ITERS >= BENCH_LAT_BLOCKS" >&2
	exit 2
fi

t_start=$(date +%s)
log() { echo "bench: $*" >&2; }

# ---- 1. dependencies and build -------------------------------------------------
if [ "${BENCH_SKIP_DEPS:-0}" != 1 ]; then
	pkgs="iperf3 jq gcc make autoconf automake libtool pkg-config libhwloc-dev xz-utils ca-certificates"
	missing=""
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		log "installing$missing"
		SUDO=""
		[ "$(id -u)" = 0 ] || SUDO=sudo
		export DEBIAN_FRONTEND=noninteractive
		# shellcheck disable=SC2086
		$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
			$SUDO apt-get update -qq
			# shellcheck disable=SC2086
			$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
		}
	fi
fi
for c in iperf3 jq timeout awk; do
	command -v "$c" >/dev/null || { log "$c is missing"; exit 1; }
done

LF=$(bash scripts/libfabric-2.1.sh)
FT=$LF/bin
for t in fi_rma_bw fi_rdm_pingpong fi_info; do
	[ -x "$FT/$t" ] || { log "$FT/$t is missing: remove $LF and rerun scripts/libfabric-2.1.sh"; exit 1; }
done

# scripts/build.sh configures out of tree; that fails when the source tree was
# configured in place (config.status at the top), so then we build from a copy
# of the working tree (tracked and untracked, not ignored, files; mtimes kept,
# so unchanged files are not rebuilt).
src=$top
if [ -f "$top/config.status" ]; then
	src=$BUILD.src
	log "the source tree is configured in place; building from a copy in $src"
	mkdir -p "$src"
	if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$top" && git ls-files -co --exclude-standard -z | xargs -0 cp -p --parents -t "$src")
	else
		(cd "$top" && tar -cf - --exclude='./build*' --exclude=./.git --exclude=config.status \
			--exclude=Makefile --exclude=config.h --exclude=config.log . ) | tar -C "$src" -xpf -
		rm -f "$src/config.status"
	fi
fi
want_cfg="src=$src libfabric=$LF"
if [ -f "$BUILD/Makefile" ] && [ "$(cat "$BUILD/.bench-config" 2>/dev/null)" != "$want_cfg" ]; then
	log "$BUILD was configured differently; cleaning it (results kept)"
	find "$BUILD" -mindepth 1 -maxdepth 1 ! -name results ! -name "$(basename "$src")" -exec rm -rf {} +
fi
bash "$src/scripts/build.sh" "$BUILD" --with-libfabric="$LF" CFLAGS="-O2"
echo "$want_cfg" >"$BUILD/.bench-config"
PLUGIN=$BUILD/.libs/libnccl-net-fabnet.so
PERF=$BUILD/fabnet-perf
if [ ! -f "$PLUGIN" ] || [ ! -x "$PERF" ]; then log "the build produced no $PLUGIN or $PERF"; exit 1; fi
if ldd "$PLUGIN" | grep -q "libfabric.so.* => $LF/"; then :; else
	log "warning: $PLUGIN does not resolve libfabric from $LF:"; ldd "$PLUGIN" | grep fabric >&2
fi
MEMBW=$BUILD/membw
[ -x "$MEMBW" ] || { log "the build produced no $MEMBW"; exit 1; }

# The tcp domain (interface) fi_info lists first: fabnet and fabtests both use it.
TCP_DOMAIN=$("$FT/fi_info" -p tcp -t FI_EP_RDM 2>/dev/null | awk '$1 == "domain:" {print $2; exit}')
[ -n "$TCP_DOMAIN" ] || { log "libfabric 2.1 lists no tcp domain"; exit 1; }

mkdir -p "$RESULTS"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fabnet-bench.XXXXXX")
bg_pids=()
cleanup() {
	local p
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SAMPLES=$RESULTS/bench-samples.csv
echo "round,order,provider,measure,size,contender,value,unit,status,others_cpu_pct,cpu_wait_pct" >"$SAMPLES"

# ---- helpers -------------------------------------------------------------------
# Other processes share the two CPUs with the two busy-polling ranks (builds and
# tests of the people working here). Before each run we wait up to
# BENCH_QUIET_WAIT s for the CPUs to be idle. During the run we account
#  - the CPU time the whole machine used minus what our own children used, and
#  - the time some runnable task waited for a CPU (/proc/pressure/cpu "some"):
#    two busy-polling ranks on two CPUs make any third runnable task wait, so
#    this catches processes that wake often but use little CPU, which hurt
#    shared-memory hand-offs most.
# A run during which others took >= BENCH_BUSY_PCT % of a core, or tasks waited
# for a CPU >= BENCH_STALL_PCT % of the run's wall time, is kept as "busy" and
# repeated (at most BENCH_RETRIES times, and not after BENCH_BUDGET seconds).
# Medians use the "ok" runs, or the busy ones when a measurement has no ok run.
BUSY_PCT=${BENCH_BUSY_PCT:-25}
STALL_PCT=${BENCH_STALL_PCT:-20}
BUDGET=${BENCH_BUDGET:-360}
RETRIES=${BENCH_RETRIES:-2}
[[ $BUSY_PCT =~ ^[0-9]+$ && $STALL_PCT =~ ^[0-9]+$ && $RETRIES =~ ^[0-9]+$ && $BUDGET =~ ^[0-9]+$ ]] ||
	{ log "BENCH_BUSY_PCT, BENCH_STALL_PCT, BENCH_RETRIES and BENCH_BUDGET are numbers"; exit 2; }
over_budget() { [ $(($(date +%s) - t_start)) -ge "$BUDGET" ]; }
cpu_ticks() { # -> "busy rest" ticks of the whole machine
	# busy: user, nice, system, steal. Interrupt time counts as rest: the
	# kernel charges loopback tcp's softirq work there, not to our processes.
	awk '/^cpu /{ print $2 + $3 + $4 + $9, $5 + $6 + $7 + $8; exit }' /proc/stat
}
our_ticks() { # CPU ticks of this shell's reaped children (cutime + cstime)
	awk '{ sub(/^.*\) /, ""); print $14 + $15 }' /proc/$$/stat
}
stall_us() { # microseconds some task waited for a CPU since boot (0 without PSI)
	awk '/^some/ { for (i = 2; i <= NF; i++) if ($i ~ /^total=/) { sub(/total=/, "", $i); print $i; f = 1 } }
		END { if (!f) print 0 }' /proc/pressure/cpu 2>/dev/null || echo 0
}
others_pct() { # BUSY0 IDLE0 OURS0 BUSY1 IDLE1 OURS1 -> % of one core used by others
	awk -v b="$(($4 - $1))" -v i="$(($5 - $2))" -v o="$(($6 - $3))" -v n="$(nproc)" \
		'BEGIN { t = b + i; x = t ? 100 * n * (b - o) / t : 0; printf "%.0f", (x < 0 ? 0 : x) }'
}
wait_quiet() {
	local deadline=$(($(date +%s) + QUIET_WAIT)) a b
	if [ "$QUIET_WAIT" = 0 ] || over_budget; then return 0; fi
	while :; do
		read -ra a < <(cpu_ticks)
		sleep 0.2
		read -ra b < <(cpu_ticks)
		[ "$(others_pct "${a[0]}" "${a[1]}" 0 "${b[0]}" "${b[1]}" 0)" -ge "$BUSY_PCT" ] || return 0
		[ "$(date +%s)" -lt "$deadline" ] || return 0
	done
}

port_in_use() { # PORT: listening or connected, IPv4 or IPv6
	local hex
	hex=$(printf ':%04X ' "$1")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" 'index($2 " ", h) { f = 1 } END { exit !f }'
}
next_port() {
	PORT=$((PORT + 1))
	while port_in_use "$PORT"; do PORT=$((PORT + 1)); done
}
wait_listen() { # PORT PID: until PORT is listened on, PID exits, or 10 s
	local hex _
	hex=$(printf ':%04X' "$1")
	for _ in $(seq 100); do
		cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$hex" '$2 ~ h "$" && $4 == "0A" { f = 1 } END { exit !f }' && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

ROUND=0 ORDER=""
# measure PROVIDER MEASURE SIZE CONTENDER UNIT FUNCTION ARGS...: FUNCTION sets V
# (empty when the run failed); every attempt becomes a line of bench-samples.csv.
measure() {
	local prov=$1 what=$2 size=$3 who=$4 unit=$5 fn=$6 attempt status c0 c1 o0 o1 s0 s1 t0 t1 others stall
	shift 6
	for ((attempt = 0; attempt <= RETRIES; attempt++)); do
		wait_quiet
		V=""
		read -ra c0 < <(cpu_ticks)
		o0=$(our_ticks) s0=$(stall_us) t0=$(date +%s%N)
		"$fn" "$@"
		o1=$(our_ticks) s1=$(stall_us) t1=$(date +%s%N)
		read -ra c1 < <(cpu_ticks)
		others=$(others_pct "${c0[0]}" "${c0[1]}" "$o0" "${c1[0]}" "${c1[1]}" "$o1")
		stall=$(awk -v s="$((s1 - s0))" -v t="$(((t1 - t0) / 1000))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * s / t : 0) }')
		if [ -z "$V" ]; then status=fail
		elif [ "$others" -ge "$BUSY_PCT" ] || [ "$stall" -ge "$STALL_PCT" ]; then status=busy
		else status=ok; fi
		echo "$ROUND,$ORDER,$prov,$what,$size,$who,$V,$unit,$status,$others,$stall" >>"$SAMPLES"
		printf 'bench: round %d %-4s %-6s %-9s %-7s %10s %-4s %s\n' "$ROUND" "$prov" "$what" "$size" \
			"$who" "${V:-FAILED}" "$unit" "$([ "$status" = busy ] && echo "(busy: others used ${others}% of a core, tasks waited ${stall}% of the time)")" >&2
		if [ "$status" != busy ] || over_budget; then break; fi
	done
}

iters_for() { # SIZE
	local n=$((BYTES / $1)) min=$((4 * WINDOW + 1))
	[ "$n" -ge "$min" ] || n=$min
	echo "$n"
}

prov_env() { # PROVIDER -> environment for fabnet-perf
	if [ -n "${CUR_EXTRA:-}" ]; then
		# shellcheck disable=SC2086
		if [ "$1" = tcp ]; then echo "FI_PROVIDER=tcp FI_TCP_IFACE=$TCP_DOMAIN $PLUGIN_ENV"; else echo "FI_PROVIDER=$1 $PLUGIN_ENV"; fi
	elif [ "$1" = tcp ]; then echo "FABNET_PROVIDER=tcp FABNET_IFACE=$TCP_DOMAIN"; else echo "FABNET_PROVIDER=$1"; fi
}
ft_dom() { if [ "$1" = tcp ]; then echo "-d $TCP_DOMAIN"; fi; }

# fabnet-perf bandwidth: GB/s (10^9 B/s) from the per-message time, read
# from its JSON (uni: rank 0 streams to rank 1, the clock stops at the
# receiver's acknowledgement of the last message).
fabnet_bw() { # PROVIDER SIZE
	local out=$tmp/fabnet.out js=$tmp/fabnet.json
	rm -f "$js"
	# shellcheck disable=SC2046
	if env $(prov_env "$1") timeout -k 5 "$RUN_TIMEOUT" "$PERF" --plugin "${CUR_EXTRA:-$PLUGIN}" -m uni \
		-b "$2" -e "$2" --iters "$(iters_for "$2")" --window "$WINDOW" --warmup 10 \
		--json "$js" >"$out" 2>&1; then
		V=$(jq -r --argjson s "$2" '.results[] | select(.mode == "uni" and .size == $s and .wrong == 0)
			| .algbw_GBps * 10000 | round / 10000' "$js" 2>/dev/null || true)
	fi
	[ -n "$V" ] || { log "fabnet-perf $1 $2 failed:"; tail -5 "$out" >&2; }
}

# fabnet-perf latency: half the median 8-byte round trip, microseconds.
fabnet_lat() { # PROVIDER
	local out=$tmp/fabnet.out js=$tmp/fabnet.json
	rm -f "$js"
	# shellcheck disable=SC2046
	if env $(prov_env "$1") timeout -k 5 "$RUN_TIMEOUT" "$PERF" --plugin "${CUR_EXTRA:-$PLUGIN}" -m lat \
		--lat-iters "$LAT_ITERS" --json "$js" >"$out" 2>&1; then
		V=$(jq -r 'select(.latency.wrong == 0) | .latency.median_us * 10000 | round / 10000' "$js" 2>/dev/null || true)
	fi
	[ -n "$V" ] || { log "fabnet-perf $1 latency failed:"; tail -5 "$out" >&2; }
}

# fabnet-perf message rate: millions of messages a second, one stream of
# RATE_MSGS messages of SIZE bytes with WINDOW in flight (uni, as for the
# bandwidth: from the per-message time, the receiver's last acknowledgement
# included).
fabnet_rate() { # PROVIDER SIZE WINDOW
	local out=$tmp/fabnet.out js=$tmp/fabnet.json
	rm -f "$js"
	# shellcheck disable=SC2046
	if env $(prov_env "$1") timeout -k 5 "$RUN_TIMEOUT" "$PERF" --plugin "${CUR_EXTRA:-$PLUGIN}" -m uni \
		-b "$2" -e "$2" --iters "$RATE_MSGS" --window "$3" --warmup 10 --json "$js" >"$out" 2>&1; then
		V=$(jq -r --argjson s "$2" '.results[] | select(.mode == "uni" and .size == $s and .wrong == 0)
			| 1 / .time_us * 10000 | round / 10000' "$js" 2>/dev/null || true)
	fi
	[ -n "$V" ] || { log "fabnet-perf rate $1 $2 window $3 failed:"; tail -5 "$out" >&2; }
}

# Another plugin, through the same fabnet-perf runs: PATH PROVIDER [SIZE [WINDOW]].
extra_bw() { CUR_EXTRA=$1; shift; fabnet_bw "$@"; CUR_EXTRA=""; }
extra_lat() { CUR_EXTRA=$1; shift; fabnet_lat "$@"; CUR_EXTRA=""; }
extra_rate() { CUR_EXTRA=$1; shift; fabnet_rate "$@"; CUR_EXTRA=""; }

# Runs a fabtests server and client on this machine; leaves their outputs in
# $tmp/srv.out and $tmp/cli.out. Returns non-zero if either failed.
ft_pair() { # TEST ARGS...
	local t=$1 sp rc=0; shift
	next_port
	timeout -k 5 "$RUN_TIMEOUT" "$FT/$t" "$@" -E="$PORT" >"$tmp/srv.out" 2>&1 &
	sp=$!
	bg_pids+=("$sp")
	if wait_listen "$PORT" "$sp"; then
		timeout -k 5 "$RUN_TIMEOUT" "$FT/$t" "$@" -E="$PORT" 127.0.0.1 >"$tmp/cli.out" 2>&1 || rc=1
	else
		rc=1
		: >"$tmp/cli.out"
	fi
	[ "$rc" = 0 ] || kill "$sp" 2>/dev/null || true
	wait "$sp" || rc=1
	bg_pids=("${bg_pids[@]:0:${#bg_pids[@]}-1}")
	if [ "$rc" != 0 ]; then
		log "$t $* failed:"; tail -3 "$tmp/srv.out" "$tmp/cli.out" >&2
	fi
	return "$rc"
}

# fi_rma_bw -o writedata: the receiver's (server's) MB/sec, which is 10^6 B/s,
# as GB/s. The receiver's clock stops when the last write's data has landed.
raw_bw() { # PROVIDER SIZE
	# shellcheck disable=SC2046
	if ft_pair fi_rma_bw -m -p "$1" $(ft_dom "$1") -e rdm -o writedata -S "$2" \
		-I "$(iters_for "$2")" -W "$WINDOW"; then
		V=$(sed -n 's/.*MB\/sec: \([0-9.]*\).*/\1/p' "$tmp/srv.out" | awk 'NR == 1 { printf "%.4f", $1 / 1e3 }')
	fi
}

# fi_rdm_bw (untagged fi_send / fi_recv) or fi_rdm_tagged_bw (fi_tsend /
# fi_trecv): the receiver's Mxfers/sec, the same unit as fabnet_rate.
raw_rate() { # TEST PROVIDER SIZE WINDOW
	# shellcheck disable=SC2046
	if ft_pair "$1" -m -p "$2" $(ft_dom "$2") -S "$3" -I "$RATE_MSGS" -W "$4"; then
		V=$(sed -n 's/.*Mxfers\/sec: \([0-9.]*\).*/\1/p' "$tmp/srv.out" | awk 'NR == 1 { printf "%.4f", $1 }')
	fi
}

# fi_rdm_pingpong: usec/xfer is the elapsed time over (iterations x 2), i.e. the
# mean one-way time, half the round trip. It runs LAT_BLOCKS timed blocks of
# LAT_ITERS/LAT_BLOCKS round trips (-S l:8,8,...); we take the median of the
# block means, which is robust to a block hit by a scheduling hiccup.
raw_lat() { # PROVIDER
	local list
	list=l:$(printf '8,%.0s' $(seq $((LAT_BLOCKS - 1))))8
	# shellcheck disable=SC2046
	if ft_pair fi_rdm_pingpong -m -p "$1" $(ft_dom "$1") -S "$list" -I $((LAT_ITERS / LAT_BLOCKS)); then
		V=$(sed -n 's/.*usec\/xfer: \([0-9.]*\).*/\1/p' "$tmp/cli.out" | sort -g |
			awk '{ a[NR] = $1 } END { if (NR) printf "%.4f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
	fi
}

# iperf3 over loopback, one TCP stream: received bits/s as GB/s. ARGS: extra
# client options (-l 1M: 1 MiB writes instead of the default 128 KiB).
iperf_bw() { # [ARGS...]
	local sp
	next_port
	timeout -k 5 $((IPERF_SECS + 30)) iperf3 -s -1 -p "$PORT" >"$tmp/iperf-srv.out" 2>&1 &
	sp=$!
	bg_pids+=("$sp")
	if wait_listen "$PORT" "$sp" &&
		timeout -k 5 $((IPERF_SECS + 20)) iperf3 -c 127.0.0.1 -p "$PORT" -t "$IPERF_SECS" -J "$@" >"$tmp/iperf.json" 2>&1; then
		V=$(jq -r '.end.sum_received.bits_per_second / 8e9 | . * 10000 | round / 10000' "$tmp/iperf.json" 2>/dev/null || true)
		[ "$V" != null ] || V=""
	else
		kill "$sp" 2>/dev/null || true
	fi
	wait "$sp" 2>/dev/null || true
	bg_pids=("${bg_pids[@]:0:${#bg_pids[@]}-1}")
	[ -n "$V" ] || { log "iperf3 failed:"; tail -3 "$tmp/iperf.json" >&2; }
}

# Single-thread memcpy (tools/membw.c): median of 3 runs of >= 200 ms.
memcpy_bw() {
	V=$(timeout -k 5 "$RUN_TIMEOUT" "$MEMBW" --size 256M --runs 3 --min-ms 200 2>&1 |
		sed -n 's/^membw: .* median \([0-9.]*\) GB\/s.*/\1/p') || V=""
}

# ---- 2. measurements -----------------------------------------------------------
log "libfabric $LF; plugin $PLUGIN; tcp domain $TCP_DOMAIN; $(nproc) CPUs"
for i in "${!EXTRA_NAMES[@]}"; do log "contender ${EXTRA_NAMES[i]}: ${EXTRA_PATHS[i]}"; done
log "$REPS rounds; sizes $SIZES; $BYTES bytes per bandwidth run; window $WINDOW; $LAT_ITERS round trips per latency run"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# The contenders of one measurement in this round's order: as given in odd
# rounds, reversed in even ones (each a command line; paths have no spaces).
alternate() { # "COMMAND ARGS"...
	local runs=("$@") i
	if ((ROUND % 2)); then
		for ((i = 0; i < ${#runs[@]}; i++)); do ${runs[i]}; done
	else
		for ((i = ${#runs[@]} - 1; i >= 0; i--)); do ${runs[i]}; done
	fi
}

for ((ROUND = 1; ROUND <= REPS; ROUND++)); do
	if ((ROUND % 2)); then ORDER="fabnet-first"; provs=$PROVIDERS; else
		ORDER="raw-first"; provs=$(echo "$PROVIDERS" | awk '{ for (i = NF; i; i--) printf "%s ", $i }')
	fi
	for prov in $provs; do
		part bw && for size in $SIZES; do
			runs=("measure $prov bw $size fabnet GB/s fabnet_bw $prov $size"
			      "measure $prov bw $size raw GB/s raw_bw $prov $size")
			for i in "${!EXTRA_NAMES[@]}"; do
				runs+=("measure $prov bw $size ${EXTRA_NAMES[i]} GB/s extra_bw ${EXTRA_PATHS[i]} $prov $size")
			done
			alternate "${runs[@]}"
		done
		if part lat; then
			runs=("measure $prov lat 8 fabnet us fabnet_lat $prov" "measure $prov lat 8 raw us raw_lat $prov")
			for i in "${!EXTRA_NAMES[@]}"; do
				runs+=("measure $prov lat 8 ${EXTRA_NAMES[i]} us extra_lat ${EXTRA_PATHS[i]} $prov")
			done
			alternate "${runs[@]}"
		fi
		part rate && for w in $RATE_WINDOWS; do
			for size in $RATE_SIZES; do
				runs=("measure $prov rate-w$w $size fabnet Mmsg/s fabnet_rate $prov $size $w"
				      "measure $prov rate-w$w $size raw Mmsg/s raw_rate fi_rdm_bw $prov $size $w"
				      "measure $prov rate-w$w $size raw-tagged Mmsg/s raw_rate fi_rdm_tagged_bw $prov $size $w")
				for i in "${!EXTRA_NAMES[@]}"; do
					runs+=("measure $prov rate-w$w $size ${EXTRA_NAMES[i]} Mmsg/s extra_rate ${EXTRA_PATHS[i]} $prov $size $w")
				done
				alternate "${runs[@]}"
			done
		done
	done
	if part limits; then
		measure tcp limit 0 iperf3 GB/s iperf_bw
		measure tcp limit 0 iperf3-l1M GB/s iperf_bw -l 1M
		measure shm limit 0 memcpy GB/s memcpy_bw
	fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# fabnet-perf's own sweeps, once per provider, for the tables and plots of
# docs/performance.md: lat, uni, bidir and a 2-rank ring, then a 3-rank ring.
if [ "$SWEEP" = 1 ]; then
	for prov in $PROVIDERS; do
		log "sweep over $prov (fabnet-perf -m lat,uni,bidir,ring; then a 3-rank ring)"
		# shellcheck disable=SC2046
		env $(prov_env "$prov") timeout -k 5 "$RUN_TIMEOUT" "$PERF" --plugin "$PLUGIN" \
			-m lat,uni,bidir,ring -b 8 -e 16M -f 4 --iters 50 --window "$WINDOW" \
			--json "$RESULTS/sweep-$prov.json" --csv "$RESULTS/sweep-$prov.csv" \
			--plot "$RESULTS/sweep-$prov.svg" >"$RESULTS/sweep-$prov.txt" 2>&1 ||
			log "the $prov sweep failed: see $RESULTS/sweep-$prov.txt"
		# shellcheck disable=SC2046
		env $(prov_env "$prov") timeout -k 5 "$RUN_TIMEOUT" "$PERF" --plugin "$PLUGIN" \
			-n 3 -m ring -b 4K -e 16M -f 4 --iters 20 --window "$WINDOW" \
			--json "$RESULTS/ring3-$prov.json" >"$RESULTS/ring3-$prov.txt" 2>&1 ||
			log "the $prov 3-rank ring failed: see $RESULTS/ring3-$prov.txt"
	done
fi

# ---- 3. medians, ratios, report ------------------------------------------------
# The samples a median uses: the "ok" runs, or the "busy" ones too when a
# measurement has no ok run.
usable() { # PROVIDER MEASURE SIZE CONTENDER -> "round value" lines
	awk -F, -v p="$1" -v m="$2" -v s="$3" -v c="$4" '
		NR > 1 && $3 == p && $4 == m && $5 == s && $6 == c && $9 != "fail" {
			if ($9 == "ok") ok[++nok] = $1 " " $7; else busy[++nb] = $1 " " $7 }
		END { if (nok) for (i = 1; i <= nok; i++) print ok[i]; else for (i = 1; i <= nb; i++) print busy[i] }' "$SAMPLES"
}
med() { sort -g | awk '{ a[NR] = $1 } END { if (NR) printf "%.4f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
median() { usable "$@" | awk '{ print $2 }' | med; }
nsamples() { usable "$@" | wc -l | tr -d ' '; }
spread() { usable "$@" | awk '{ if (NR == 1 || $2 < lo) lo = $2; if (NR == 1 || $2 > hi) hi = $2 } END { if (NR) printf "%s-%s", lo, hi }'; }
# Median over rounds of fabnet/raw (OP "/") or fabnet-raw (OP "-") taken within
# one round, from runs that ran next to each other (or against OTHER).
paired() { # PROVIDER MEASURE SIZE OP [OTHER: raw]
	join <(usable "$1" "$2" "$3" fabnet | sort -k1,1 -u) <(usable "$1" "$2" "$3" "${5:-raw}" | sort -k1,1 -u) |
		awk -v op="$4" '{ print (op == "/" ? ($3 ? $2 / $3 : 0) : $2 - $3) }' | med
}
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }
human_size() { awk -v s="$1" 'BEGIN { if (s >= 1048576 && s % 1048576 == 0) printf "%dMiB", s / 1048576; else printf "%dB", s }'; }
lat_goal() { # the goal for fabnet's latency minus raw libfabric's, us
	case $1 in tcp) echo 1.0 ;; shm) echo 0.3 ;; *) echo "" ;; esac
}

iperf_default=$(median tcp limit 0 iperf3)
iperf_1m=$(median tcp limit 0 iperf3-l1M)
# The tcp ceiling: the better of the two iperf3 medians.
iperf=$(printf '%s\n%s\n' "$iperf_default" "$iperf_1m" | sort -g | tail -1)
memcpy=$(median shm limit 0 memcpy)

RES_CSV=$RESULTS/bench-results.csv
echo "kind,provider,size,name,value,unit,goal,met,paired,samples,range" >"$RES_CSV"
json_m="" json_r=""
addm() { # PROVIDER MEASURE SIZE CONTENDER UNIT
	local v n r
	v=$(median "$1" "$2" "$3" "$4") n=$(nsamples "$1" "$2" "$3" "$4") r=$(spread "$1" "$2" "$3" "$4")
	echo "median,$1,$3,$2:$4,$v,$5,,,,$n,$r" >>"$RES_CSV"
	json_m="$json_m${json_m:+,}
    {\"provider\": \"$1\", \"measure\": \"$2\", \"size\": $3, \"contender\": \"$4\", \"median\": ${v:-null}, \"unit\": \"$5\", \"samples\": $n, \"range\": \"$r\"}"
}
addr() { # PROVIDER SIZE NAME VALUE UNIT GOAL-OP GOAL PAIRED
	local met=null metc=""
	if [ -n "$4" ] && [ -n "$7" ]; then
		if awk "BEGIN { exit !($4 $6 $7) }"; then met=true; else met=false; fi
		metc=$met
	fi
	echo "ratio,$1,$2,$3,$4,$5,${7:+$6 $7},$metc,$8,," >>"$RES_CSV"
	json_r="$json_r${json_r:+,}
    {\"provider\": \"$1\", \"size\": $2, \"name\": \"$3\", \"value\": ${4:-null}, \"unit\": \"$5\", \"goal\": $([ -n "$7" ] && echo "\"$6 $7\"" || echo null), \"met\": $met, \"paired_median\": ${8:-null}}"
}

table=$tmp/table.txt
{
	printf '\nMedians of %d rounds (bandwidth GB/s = 10^9 B/s; latency us, one way)\n' "$REPS"
	printf 'ratio: fabnet/raw of the medians (latency: fabnet - raw); paired: median over rounds of\n'
	printf 'the same within a round\n\n'
	printf '%-5s %-9s %9s %9s %9s %9s %5s  %-16s %-16s\n' prov measure fabnet raw ratio paired n "fabnet range" "raw range"
	for prov in $PROVIDERS; do
		part bw && for size in $SIZES; do
			addm "$prov" bw "$size" fabnet GB/s
			addm "$prov" bw "$size" raw GB/s
			f=$(median "$prov" bw "$size" fabnet) r=$(median "$prov" bw "$size" raw)
			ratio="" pr=$(paired "$prov" bw "$size" /)
			[ -n "$f" ] && [ -n "$r" ] && ratio=$(calc "$f / $r")
			addr "$prov" "$size" fabnet/raw_bw "$ratio" ratio ">=" 0.95 "$pr"
			lim="" limname=""
			if [ "$prov" = tcp ]; then lim=$iperf limname=iperf3; elif [ "$prov" = shm ]; then lim=$memcpy limname=memcpy; fi
			if [ -n "$lim" ]; then
				if [ -n "$f" ]; then addr "$prov" "$size" "fabnet/$limname" "$(calc "$f / $lim")" fraction "" "" ""; fi
				if [ -n "$r" ]; then addr "$prov" "$size" "raw/$limname" "$(calc "$r / $lim")" fraction "" "" ""; fi
			fi
			printf '%-5s %-9s %9s %9s %9s %9s %5s  %-16s %-16s\n' "$prov" "bw $(human_size "$size")" "${f:-FAIL}" "${r:-FAIL}" \
				"${ratio:--}" "${pr:--}" "$(nsamples "$prov" bw "$size" fabnet)/$(nsamples "$prov" bw "$size" raw)" \
				"$(spread "$prov" bw "$size" fabnet)" "$(spread "$prov" bw "$size" raw)"
			for x in "${EXTRA_NAMES[@]}"; do
				addm "$prov" bw "$size" "$x" GB/s
				o=$(median "$prov" bw "$size" "$x") ratio="" pr=$(paired "$prov" bw "$size" / "$x")
				[ -n "$f" ] && [ -n "$o" ] && ratio=$(calc "$f / $o")
				addr "$prov" "$size" "fabnet/${x}_bw" "$ratio" ratio ">=" 1.0 "$pr"
				printf '%-5s %-9s %9s %9s %9s %9s %5s  %-16s %-16s\n' "$prov" "bw $(human_size "$size")" "${f:-FAIL}" \
					"${o:-FAIL}" "${ratio:--}" "${pr:--}" "$(nsamples "$prov" bw "$size" "$x")" "vs $x" \
					"$(spread "$prov" bw "$size" "$x")"
			done
		done
		part lat || continue
		addm "$prov" lat 8 fabnet us
		addm "$prov" lat 8 raw us
		f=$(median "$prov" lat 8 fabnet) r=$(median "$prov" lat 8 raw)
		gap="" pr=$(paired "$prov" lat 8 -)
		[ -n "$f" ] && [ -n "$r" ] && gap=$(calc "$f - $r")
		addr "$prov" 8 fabnet-raw_lat "$gap" us "<=" "$(lat_goal "$prov")" "$pr"
		printf '%-5s %-9s %9s %9s %9s %9s %5s  %-16s %-16s\n' "$prov" "lat 8B" "${f:-FAIL}" "${r:-FAIL}" \
			"${gap:--}" "${pr:--}" "$(nsamples "$prov" lat 8 fabnet)/$(nsamples "$prov" lat 8 raw)" \
			"$(spread "$prov" lat 8 fabnet)" "$(spread "$prov" lat 8 raw)"
		for x in "${EXTRA_NAMES[@]}"; do
			addm "$prov" lat 8 "$x" us
			o=$(median "$prov" lat 8 "$x") gap="" pr=$(paired "$prov" lat 8 - "$x")
			[ -n "$f" ] && [ -n "$o" ] && gap=$(calc "$f - $o")
			addr "$prov" 8 "fabnet-${x}_lat" "$gap" us "<=" 0 "$pr"
			printf '%-5s %-9s %9s %9s %9s %9s %5s  %-16s %-16s\n' "$prov" "lat 8B" "${f:-FAIL}" "${o:-FAIL}" \
				"${gap:--}" "${pr:--}" "$(nsamples "$prov" lat 8 "$x")" "vs $x" "$(spread "$prov" lat 8 "$x")"
		done
	done
	if part limits; then
		addm tcp limit 0 iperf3 GB/s
		addm tcp limit 0 iperf3-l1M GB/s
		addm shm limit 0 memcpy GB/s
		printf '%-5s %-9s %9s %35s  %-16s\n' tcp iperf3 "${iperf_default:-FAIL}" "$(nsamples tcp limit 0 iperf3)" "$(spread tcp limit 0 iperf3)"
		printf '%-5s %-9s %9s %35s  %-16s\n' tcp "iperf3 -l1M" "${iperf_1m:-FAIL}" "$(nsamples tcp limit 0 iperf3-l1M)" "$(spread tcp limit 0 iperf3-l1M)"
		printf '%-5s %-9s %9s %35s  %-16s\n' shm memcpy "${memcpy:-FAIL}" "$(nsamples shm limit 0 memcpy)" "$(spread shm limit 0 memcpy)"
	fi
	if part rate; then
		printf '\nMessage rate, millions of messages a second (medians of %d rounds; one stream;\n' "$REPS"
		printf 'raw = fi_rdm_bw, tagged = fi_rdm_tagged_bw; ratio and paired: fabnet over each)\n\n'
		printf '%-5s %-6s %6s %9s %9s %9s %9s %9s %9s %9s\n' prov window size fabnet raw tagged /raw paired /tagged paired
		for prov in $PROVIDERS; do
			for w in $RATE_WINDOWS; do
				for size in $RATE_SIZES; do
					goal=""
					[ "$w" -ge 64 ] && [ "$size" -le 8192 ] && goal=0.9
					for c in fabnet raw raw-tagged "${EXTRA_NAMES[@]}"; do addm "$prov" "rate-w$w" "$size" "$c" Mmsg/s; done
					f=$(median "$prov" "rate-w$w" "$size" fabnet)
					line=""
					for c in raw raw-tagged "${EXTRA_NAMES[@]}"; do
						o=$(median "$prov" "rate-w$w" "$size" "$c") ratio="" pr=$(paired "$prov" "rate-w$w" "$size" / "$c")
						[ -n "$f" ] && [ -n "$o" ] && ratio=$(calc "$f / $o")
						case $c in raw | raw-tagged) g=$goal ;; *) g=1.0 ;; esac
						addr "$prov" "$size" "fabnet/${c}_rate_w$w" "$ratio" ratio ">=" "$g" "$pr"
						line="$line $(printf '%9s %9s' "${ratio:--}" "${pr:--}")"
					done
					printf '%-5s %-6s %6s %9s %9s %9s%s\n' "$prov" "$w" "$(human_size "$size")" "${f:-FAIL}" \
						"$(median "$prov" "rate-w$w" "$size" raw)" "$(median "$prov" "rate-w$w" "$size" raw-tagged)" "$line"
				done
			done
		done
		for x in "${EXTRA_NAMES[@]}"; do printf '(then fabnet/%s and its paired median)\n' "$x"; done
	fi

	printf '\nRatios against the goals (fractions of iperf3: of the better iperf3 median)\n\n'
	printf '%-5s %-6s %-15s %9s %-8s %-4s %s\n' prov size ratio value goal met paired
	awk -F, 'NR > 1 && $1 == "ratio" {
		printf "%-5s %-6s %-15s %9s %-8s %-4s %s\n", $2, ($3 >= 1048576 ? $3 / 1048576 "MiB" : $3 "B"), $4,
			($5 == "" ? "-" : $5), $7, ($8 == "true" ? "yes" : ($8 == "false" ? "NO" : "")), $9 }' "$RES_CSV"
} >"$table"
cat "$table"

fails=$(awk -F, 'NR > 1 && $9 == "fail" { n++ } END { print n + 0 }' "$SAMPLES")
noisy=$(awk -F, 'NR > 1 && $9 == "busy" { n++ } END { print n + 0 }' "$SAMPLES")
runs=$(($(wc -l <"$SAMPLES") - 1))
elapsed=$(($(date +%s) - t_start))
printf '\n%d runs, %d failed, %d busy (others used >= %d%% of a core, or tasks waited for a CPU >= %d%% of\nthe time; repeated); %d s in all\n' \
	"$runs" "$fails" "$noisy" "$BUSY_PCT" "$STALL_PCT" "$elapsed"
printf 'load average before %s, after %s\n' "$load_start" "$load_end"

kernel=$(uname -r)
os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
lfver=$("$FT/fi_info" --version 2>/dev/null | awk '/libfabric:/ { print $2; exit }')
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Tracked files that differ from the commit: the build measured the working tree.
modified=$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null |
	awk '{ printf "%s\"%s\"", (NR > 1 ? ", " : ""), $NF }')
jstr() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
cat >"$RESULTS/bench-results.json" <<JSON
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "fabnet_commit": "$commit",
  "fabnet_modified_files": [$modified],
  "machine": {"cpus": $(nproc), "cpu": "$(jstr "$cpu")", "os": "$(jstr "$os")", "kernel": "$kernel",
              "mem_gib": $(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo),
              "load_before": "$load_start", "load_after": "$load_end"},
  "libfabric": {"version": "${lfver:-unknown}", "prefix": "$(jstr "$LF")", "tcp_domain": "$TCP_DOMAIN"},
  "config": {"rounds": $REPS, "sizes": [$(echo "$SIZES" | awk '{ $1 = $1; gsub(/ /, ","); print }')], "bytes_per_bw_run": $BYTES,
             "window": $WINDOW, "lat_round_trips": $LAT_ITERS, "raw_lat_blocks": $LAT_BLOCKS,
             "parts": "$(echo $PARTS)", "rate_sizes": [$(echo "$RATE_SIZES" | awk '{ $1 = $1; gsub(/ /, ","); print }')],
             "rate_windows": [$(echo "$RATE_WINDOWS" | awk '{ $1 = $1; gsub(/ /, ","); print }')], "rate_messages": $RATE_MSGS,
             "iperf3_seconds": $IPERF_SECS, "quiet_wait_s": $QUIET_WAIT, "retries": $RETRIES,
             "other_plugins": [$(for i in "${!EXTRA_NAMES[@]}"; do printf '%s{"name": "%s", "path": "%s"}' "$([ "$i" = 0 ] || echo ", ")" "${EXTRA_NAMES[i]}" "$(jstr "${EXTRA_PATHS[i]}")"; done)]},
  "units": {"bw": "GB/s = 10^9 bytes/s", "rate": "millions of messages a second, one stream", "lat": "microseconds one way (fabnet: half the median round trip; raw: median over blocks of the mean half round trip)"},
  "medians": [$json_m
  ],
  "ratios": [$json_r
  ],
  "runs": $runs, "failed_runs": $fails, "busy_runs": $noisy, "busy_thresholds_pct": {"others_cpu": $BUSY_PCT, "cpu_wait": $STALL_PCT}, "seconds": $elapsed,
  "samples_csv": "bench-samples.csv"
}
JSON
jq . "$RESULTS/bench-results.json" >/dev/null || { log "bench-results.json is not valid JSON"; exit 1; }
cp "$table" "$RESULTS/bench-table.txt"
echo "results: $RESULTS/bench-results.json, bench-results.csv, bench-samples.csv, bench-table.txt"
[ "$fails" = 0 ] || exit 1
