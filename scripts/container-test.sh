#!/usr/bin/env bash
# The container image recipe, built and checked without a registry: a clean
# bookworm root (mmdebstrap) stands in for the user's CUDA/NCCL image;
# contrib/container/Containerfile layers fabnet onto it, once against
# Debian's libfabric-dev and once against a libfabric under a prefix in the
# base (libfabric 2.1, as the EFA installer's /opt/amazon/efa would be).
# In each image: fabnet-info, fabnet-info --doctor, and fabnet-perf with two
# processes over tcp and shm, every message verified (--check all); then two
# containers, one rank in each, over tcp across podman's bridge.
#
# Usage: scripts/container-test.sh   (root; installs podman, runc, mmdebstrap)
# Environment: FABNET_CONTAINER_PREFIX=0 skips the libfabric-prefix image.
# Podman runs with runc and explicit ulimits (crun and podman's default ulimits
# fail here: docs/container.md).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

pass=0 fail=0 skip=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
skipped() { echo "SKIP $1: $2"; skip=$((skip + 1)); }
log() { echo "container-test: $*"; }

if [ "$(id -u)" != 0 ]; then
	echo "container-test: SKIP: needs root (podman, apt)"
	exit 77
fi
export DEBIAN_FRONTEND=noninteractive
bash scripts/install-deps.sh podman runc mmdebstrap containernetworking-plugins || exit 1

tmp=$(mktemp -d /tmp/fabnet-container-test.XXXXXX)
chmod 755 "$tmp"
id=fabnet-ct-$$
podman=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
limits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	"${podman[@]}" rm -f -t 0 "$id-rank0" "$id-rank1" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

root=$(bash scripts/bookworm-root.sh) || exit 1
key=$(basename "$root" .tar)
base=localhost/fabnet-test-base:${key#bookworm-}
if ! "${podman[@]}" image exists "$base"; then
	"${podman[@]}" import -q "$root" "$base" >/dev/null || { log "podman import failed"; exit 1; }
fi

# build TAG BUILD-ARGS...: the recipe as a user runs it, from the source tree
build() {
	local tag=$1 start=$SECONDS
	shift
	if nice -n 10 "${podman[@]}" build "${limits[@]}" -f contrib/container/Containerfile \
		--build-arg BASE_IMAGE="$base" "$@" -t "$tag" . >"$tmp/build.log" 2>&1; then
		ok "image $tag built ($((SECONDS - start)) s)"
		return 0
	fi
	ko "image $tag" "podman build failed: $(tail -5 "$tmp/build.log" | tr '\n' ' ')"
	return 1
}

# in IMAGE [RUN-OPTIONS...] -- COMMAND...: runs in a fresh container with the
# flags docs/container.md gives (no EFA device here); $tmp is /out inside.
in_image() {
	local image=$1
	shift
	local -a opts=()
	while [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	timeout -k 10 300 "${podman[@]}" run --rm "${limits[@]}" --shm-size=1g \
		-v "$tmp:/out" "${opts[@]}" "$image" "$@"
}

# check_info JSON-FILE PROVIDER LIBFABRIC-MAJOR.MINOR
check_info() {
	python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
prov, want = sys.argv[2], sys.argv[3]
errs = []
if d["usable_devices"] < 1: errs.append("no usable device")
if not all(x["provider"].split(";")[0] == prov for x in d["devices"]): errs.append("providers %r" % [x["provider"] for x in d["devices"]])
for k in ("libfabric_built", "libfabric_runtime"):
    if d[k] != want: errs.append("%s %s, expected %s" % (k, d[k], want))
print("ok" if not errs else "; ".join(errs))
PY
}

# check_perf JSON-FILE: the run verified every message and moved bytes
check_perf() {
	python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
errs = []
if d.get("ok") is not True: errs.append("ok is not true")
if d.get("ranks") != 2: errs.append("ranks %r" % d.get("ranks"))
rows = d["results"]
if {r["mode"] for r in rows} != {"uni", "bidir"}: errs.append("modes %r" % sorted({r["mode"] for r in rows}))
for r in rows:
    if r["wrong"] or not r["algbw_GBps"] > 0: errs.append("row %r" % r)
l = d.get("latency")
if not l or l["wrong"] or not l["median_us"] > 0: errs.append("latency %r" % l)
print("ok" if not errs else "; ".join(errs)[:400])
PY
}

# check_doctor JSON-FILE EXIT-STATUS: the agreed --doctor interface
check_doctor() {
	python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rc = int(sys.argv[2])
errs = []
sev = {f["id"]: f["severity"] for f in d["findings"]}
for f in d["findings"]:
    for k in ("id", "severity", "what", "why", "fix"):
        if not isinstance(f.get(k), str): errs.append("finding %r lacks %s" % (f.get("id"), k))
    if f.get("severity") not in ("ok", "info", "warn", "error"): errs.append("severity %r" % f.get("severity"))
want_rc = {"ok": 0, "warn": 1, "error": 2}.get(d.get("verdict"))
if want_rc is None: errs.append("verdict %r" % d.get("verdict"))
elif want_rc != rc: errs.append("verdict %s but exit %d" % (d["verdict"], rc))
worst = max([("ok", "info", "warn", "error").index(s) for s in sev.values()] or [0])
if want_rc is not None and want_rc != (0 if worst <= 1 else worst - 1): errs.append("verdict %s, worst finding %s" % (d["verdict"], ("ok", "info", "warn", "error")[worst]))
if sev.get("nccl-loads-plugin") != "ok": errs.append("nccl-loads-plugin: %r" % sev.get("nccl-loads-plugin"))
if sev.get("selftest") != "ok": errs.append("selftest: %r" % sev.get("selftest"))
if rc == 2: errs.append("the doctor says fabnet would not carry a job")
print("ok" if not errs else "; ".join(errs)[:600])
PY
}

# check_image IMAGE LIBFABRIC-VERSION
check_image() {
	local image=$1 lf=$2 rc res prov
	in_image "$image" -e FABNET_PROVIDER=tcp -- fabnet-info >"$tmp/info.txt" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q "^fabnet-info: libfabric $lf at build, $lf at run time" "$tmp/info.txt"; then
		ok "$image: fabnet-info"
	else
		ko "$image: fabnet-info" "exit $rc: $(head -3 "$tmp/info.txt" | tr '\n' ' ')"
	fi
	for prov in tcp shm; do
		in_image "$image" -e FABNET_PROVIDER=$prov -- sh -c 'fabnet-info --json >/out/info.json'
		res=$(check_info "$tmp/info.json" $prov "$lf" 2>&1)
		[ "$res" = ok ] && ok "$image: fabnet-info --json, $prov" || ko "$image: fabnet-info --json, $prov" "$res"
		# no --plugin: fabnet-perf finds libnccl-net-fabnet.so as NCCL would
		in_image "$image" -- fabnet-perf -p $prov -m lat,uni,bidir -b 1 -e 4M -f 8 --iters 20 \
			--warmup 2 --lat-iters 200 --check all --json /out/perf.json >"$tmp/perf.txt" 2>&1
		rc=$?
		res=$([ $rc -eq 0 ] && check_perf "$tmp/perf.json" 2>&1 || echo "exit $rc: $(tail -3 "$tmp/perf.txt" | tr '\n' ' ')")
		[ "$res" = ok ] && ok "$image: fabnet-perf, 2 processes, $prov, every message verified" ||
			ko "$image: fabnet-perf $prov" "$res"
		rm -f "$tmp/info.json" "$tmp/perf.json"
	done
	check_image_doctor "$image"
}

check_image_doctor() {
	local image=$1 rc rc_text res
	in_image "$image" -e FABNET_PROVIDER=tcp -- fabnet-info --doctor >"$tmp/doctor.txt" 2>&1
	rc_text=$?
	if [ $rc_text -eq 2 ] && grep -q '^usage: fabnet-info' "$tmp/doctor.txt"; then
		skipped "$image: fabnet-info --doctor" "this fabnet-info has no --doctor yet"
		return
	fi
	in_image "$image" -e FABNET_PROVIDER=tcp -- sh -c 'fabnet-info --doctor --json >/out/doctor.json'
	rc=$?
	res=$(check_doctor "$tmp/doctor.json" $rc 2>&1)
	[ "$res" = ok ] && ok "$image: fabnet-info --doctor --json (exit $rc)" || ko "$image: fabnet-info --doctor --json" "$res"
	case $rc_text in 0|1|2) ;; *) rc_text="$rc_text (not 0, 1 or 2)" ;; esac
	[ "$rc_text" = "$rc" ] && [ -n "$(tail -1 "$tmp/doctor.txt")" ] && ok "$image: fabnet-info --doctor (text, exit $rc_text)" ||
		ko "$image: fabnet-info --doctor" "text exit $rc_text, JSON exit $rc"
}

# Two containers on podman's bridge, one rank each, tcp between them: the
# way ranks on two hosts meet (rank 0 listens on the control port).
check_two_containers() {
	local image=$1 ip rc res port=18515
	"${podman[@]}" run -d --name "$id-rank0" "${limits[@]}" -v "$tmp:/out" "$image" \
		fabnet-perf -p tcp -m lat,uni,bidir -b 1K -e 1M -f 32 --iters 10 --warmup 2 \
		--lat-iters 100 --check all --rank 0 --nranks 2 --ctl 0.0.0.0:$port \
		--json /out/two.json >/dev/null
	ip=$("${podman[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' "$id-rank0")
	timeout -k 10 300 "${podman[@]}" run --rm --name "$id-rank1" "${limits[@]}" "$image" \
		fabnet-perf -p tcp --rank 1 --nranks 2 --ctl "$ip:$port" -m lat,uni,bidir -b 1K -e 1M \
		-f 32 --iters 10 --warmup 2 --lat-iters 100 --check all >"$tmp/rank1.txt" 2>&1
	rc=$?
	rc0=$(timeout 120 "${podman[@]}" wait "$id-rank0")
	"${podman[@]}" logs "$id-rank0" >"$tmp/rank0.txt" 2>&1
	"${podman[@]}" rm -f "$id-rank0" >/dev/null 2>&1
	if [ $rc -ne 0 ] || [ "$rc0" != 0 ]; then
		ko "$image: two containers over tcp" "rank 1 exit $rc, rank 0 exit $rc0: $(tail -2 "$tmp/rank0.txt" "$tmp/rank1.txt" | tr '\n' ' ')"
		return
	fi
	res=$(check_perf "$tmp/two.json" 2>&1)
	[ "$res" = ok ] && ok "$image: two containers ($ip), tcp, every message verified" ||
		ko "$image: two containers" "$res"
}

image=localhost/fabnet-test:$$
if build "$image"; then
	check_image "$image" 1.17
	check_two_containers "$image"
fi
[ -n "${FABNET_CONTAINER_KEEP:-}" ] || "${podman[@]}" rmi -f "$image" >/dev/null 2>&1

if [ "${FABNET_CONTAINER_PREFIX:-1}" = 0 ]; then
	skipped "libfabric-prefix image" "FABNET_CONTAINER_PREFIX=0"
elif lf21=$(bash scripts/libfabric-2.1.sh 2>/dev/null); then
	# a base that carries its own libfabric under a prefix, as EFA images do;
	# kept under a tag of its inputs, so that the next run's build reuses the
	# layers built on it (the apt step above all)
	lfbase=localhost/fabnet-test-lfbase:$(printf '%s %s' "$base" "$(ls "$lf21"/.fabnet-built-*)" |
		sha256sum | cut -c1-16)
	if ! "${podman[@]}" image exists "$lfbase"; then
		ctx=$tmp/lf-base
		mkdir -p "$ctx/opt/libfabric"
		cp -a "$lf21/lib" "$lf21/include" "$ctx/opt/libfabric/"
		rm -f "$ctx"/opt/libfabric/lib/*.a "$ctx"/opt/libfabric/lib/*.la
		printf 'FROM %s\nCOPY opt /opt\n' "$base" >"$ctx/Containerfile"
		"${podman[@]}" build -q "${limits[@]}" -t "$lfbase" "$ctx" >/dev/null 2>&1
	fi
	if "${podman[@]}" image exists "$lfbase"; then
		image=localhost/fabnet-test-lf:$$
		base_save=$base
		base=$lfbase
		build "$image" --build-arg LIBFABRIC_PREFIX=/opt/libfabric && check_image "$image" 2.1
		base=$base_save
		[ -n "${FABNET_CONTAINER_KEEP:-}" ] || "${podman[@]}" rmi -f "$image" >/dev/null 2>&1
	else
		ko "libfabric-prefix base image" "podman build failed"
	fi
else
	skipped "libfabric-prefix image" "scripts/libfabric-2.1.sh failed"
fi
# dangling images are the build cache of the steps above: keep a day of it
"${podman[@]}" image prune -f --filter until=24h >/dev/null 2>&1

echo "container-test: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
