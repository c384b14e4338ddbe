#!/usr/bin/env bash
# fabnet-perf in each of its modes, briefly, over tcp and shm: every run must
# verify its data and write sane results. Not a performance test: it checks
# only that bandwidths are positive and that nothing was corrupted, so a
# loaded machine does not fail it.
#
# Environment (make check sets them): FABNET_PERF (the fabnet-perf binary),
# FABNET_PLUGIN (the plugin .so). FABNET_PERF_PROVIDERS ("tcp shm").
set -u
perf=${FABNET_PERF:-$PWD/fabnet-perf}
plugin=${FABNET_PLUGIN:-$PWD/.libs/libnccl-net-fabnet.so}
providers=${FABNET_PERF_PROVIDERS:-tcp shm}
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

# shm regions of processes killed earlier block a new process with that pid.
for f in /dev/shm/[0-9]*:0:0; do
	[ -e "$f" ] || continue
	pid=${f#/dev/shm/}; pid=${pid%%:*}
	kill -0 "$pid" 2>/dev/null || rm -f "$f"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fabnet-perf-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# JSON checks: the file parses, says ok, has the results asked for, nothing
# wrong, every bandwidth positive. ARGS: file, then the modes expected.
check_json() {
	python3 - "$@" <<'PY'
import json, sys
path, want = sys.argv[1], sys.argv[2:]
d = json.load(open(path))
errs = []
if d.get("ok") is not True: errs.append("ok is not true")
modes = {r["mode"] for r in d["results"]}
for m in want:
    if m == "lat":
        l = d.get("latency")
        if not l or not l["median_us"] > 0 or l["wrong"]: errs.append("latency: %r" % l)
    elif m == "comms":
        c = d.get("comms")
        if not c or c["wrong"] or not c["count"] > 0 or not c["setup_ms"] > 0: errs.append("comms: %r" % c)
    elif m not in modes: errs.append("no %s results" % m)
for r in d["results"]:
    if r["wrong"] or not r["algbw_GBps"] > 0 or not r["busbw_GBps"] >= r["algbw_GBps"]:
        errs.append("bad row %r" % r)
    if r["mode"] == "ring" and r["ranks"] != d["ranks"]: errs.append("ring ranks %r" % r)
print("ok" if not errs else "; ".join(errs)[:400])
PY
}

# run NAME EXPECTED-MODES -- fabnet-perf ARGS: runs it, checks the exit
# status, the JSON and the CSV (same rows).
run() {
	local name=$1 modes=$2 out=$tmp/$1 rc res
	shift 3
	timeout -k 5 60 "$perf" --plugin "$plugin" --json "$out.json" --csv "$out.csv" "$@" \
		>"$out.log" 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		ko "$name" "exit $rc: $(tail -3 "$out.log" | tr '\n' ' ')"
		return
	fi
	res=$(check_json "$out.json" $modes 2>&1)
	[ "$res" = ok ] || { ko "$name" "JSON: $res"; return; }
	res=$(python3 -c '
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
d = json.load(open(sys.argv[2]))
bw = [r for r in rows if r["mode"] not in ("lat", "comms")]
print("ok" if len(bw) == len(d["results"]) and all(int(r["wrong"]) == 0 for r in rows) else "csv rows %d vs %d" % (len(bw), len(d["results"])))
' "$out.csv" "$out.json" 2>&1)
	[ "$res" = ok ] && ok "$name" || ko "$name" "CSV: $res"
}

for prov in $providers; do
	run "$prov-lat-uni-bidir" "lat uni bidir" -- -p "$prov" -m lat,uni,bidir \
		-b 8 -e 1M -f 16 --iters 10 --warmup 2 --lat-iters 100
	run "$prov-check-all" "uni bidir" -- -p "$prov" -m uni,bidir -b 1 -e 256K -f 8 \
		--iters 12 --warmup 2 --window 4 --check all
	run "$prov-ring3" "ring" -- -p "$prov" -n 3 -m ring -b 4 -e 1M -f 16 --iters 4 \
		--warmup 1 --slice 64K --window 4 --check all
	run "$prov-comms256" "comms" -- -p "$prov" -m comms --comms 256
done

# Ranks started by hand on a TCP control address, and as under mpirun (rank
# and size from the environment, MPI itself not involved).
port=$((20000 + $$ % 20000))
for r in 1 2; do
	timeout -k 5 60 "$perf" --plugin "$plugin" -p tcp -m ring,uni -b 64K -e 64K --iters 4 \
		--rank $r --nranks 3 --ctl 127.0.0.1:$port >"$tmp/hand$r.log" 2>&1 &
done
run "tcp-ring3-by-hand" "ring uni" -- -p tcp -m ring,uni -b 64K -e 64K --iters 4 --rank 0 \
	--nranks 3 --ctl 127.0.0.1:$port
wait || ko "tcp-ring3-by-hand" "a rank failed: $(tail -2 "$tmp"/hand*.log | tr '\n' ' ')"
for r in 1; do
	OMPI_COMM_WORLD_RANK=$r OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 \
	PMIX_NAMESPACE="test-$$" timeout -k 5 60 "$perf" --plugin "$plugin" -p shm -m lat,bidir \
		-b 4K -e 4K --iters 4 --lat-iters 10 >"$tmp/mpi$r.log" 2>&1 &
done
OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 \
PMIX_NAMESPACE="test-$$" run "shm-mpi-env" "lat bidir" -- -p shm -m lat,bidir -b 4K -e 4K \
	--iters 4 --lat-iters 10
wait || ko "shm-mpi-env" "rank 1 failed: $(tail -2 "$tmp/mpi1.log" | tr '\n' ' ')"

# The plot is an SVG document with a line per mode.
if "$perf" --plugin "$plugin" -p shm -m uni,bidir -b 1K -e 64K -f 8 --iters 4 \
	--plot "$tmp/p.svg" >/dev/null 2>&1 &&
	python3 -c 'import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); \
		n = len(r.findall("{http://www.w3.org/2000/svg}polyline")); sys.exit(n != 2)' "$tmp/p.svg"; then
	ok "svg plot"
else
	ko "svg plot" "missing or not two polylines"
fi

# Bad options are refused with status 2.
"$perf" --plugin "$plugin" -m nonsense >/dev/null 2>&1
[ $? -eq 2 ] && ok "bad mode refused" || ko "bad mode" "not exit 2"

echo "perf.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
