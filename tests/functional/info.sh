#!/usr/bin/env bash
# fabnet-info against the providers actually present: the JSON parses, every
# bit not advertised has a reason, the DMABUF decision matches the libfabric
# we were built with, and the exit status says whether a device is usable.
set -u
info=${FABNET_INFO:?path to fabnet-info}
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

# $1 provider, $2 FABNET_DMABUF as set ("" when unset); JSON on stdin.
check_json() {
	python3 -c '
import json, sys
prov, env_dmabuf = sys.argv[1], sys.argv[2]
d = json.load(sys.stdin)
built = tuple(map(int, d["libfabric_built"].split(".")))
runtime = tuple(map(int, d["libfabric_runtime"].split(".")))
errs = []
if not d["devices"]: errs.append("no device")
for dev in d["devices"]:
    if dev["provider"].split(";")[0] != prov: errs.append("provider " + dev["provider"])
    ps, why = dev["ptr_support"], dev["not_advertised"]
    if set(ps) != {"HOST", "CUDA", "DMABUF"}: errs.append("ptr_support names %s" % sorted(ps))
    if not ps["HOST"]: errs.append("HOST not advertised")
    # every bit not advertised has a reason, and only those have one
    for bit, on in ps.items():
        reason = why.get(bit)
        if not on and not (isinstance(reason, str) and reason.strip()):
            errs.append("no reason for " + bit)
        if on and reason is not None: errs.append("a reason for advertised " + bit)
    for bit in why:
        if bit not in ps: errs.append("reason for unknown bit " + bit)
    if built < (1, 20):
        want = "FI_MR_DMABUF not declared: built against libfabric %d.%d" % built
        if ps["DMABUF"]: errs.append("DMABUF advertised without FI_MR_DMABUF")
        elif want not in why["DMABUF"]: errs.append("DMABUF reason %r lacks %r" % (why["DMABUF"], want))
    elif env_dmabuf == "0":
        if ps["DMABUF"]: errs.append("DMABUF advertised although FABNET_DMABUF=0")
        elif "FABNET_DMABUF=0" not in why["DMABUF"]: errs.append("DMABUF reason %r" % why["DMABUF"])
    elif runtime >= (1, 20):
        # tcp and shm import a memfd dma-buf (libfabric 2.1): the probe must prove it
        if not ps["DMABUF"]: errs.append("DMABUF not advertised: " + why["DMABUF"])
        elif dev["dmabuf_raddr"] not in ("virtual", "offset", "fd_word"):
            errs.append("dmabuf_raddr %r" % dev["dmabuf_raddr"])
    if ps["CUDA"]: errs.append("CUDA advertised on a machine without a GPU")
print("ok" if not errs else "; ".join(errs))
' "$1" "$2" 2>&1
}

for prov in tcp shm; do
	out=$(env -u FABNET_DMABUF FABNET_PROVIDER=$prov "$info" --json); rc=$?
	[ $rc -eq 0 ] && ok "$prov: exit 0 with a usable device" || ko "$prov: exit status" "$rc"
	check=$(printf '%s' "$out" | check_json "$prov" "")
	[ "$check" = ok ] && ok "$prov: JSON parses and explains every bit" || ko "$prov: JSON" "$check"
	out=$(FABNET_DMABUF=0 FABNET_PROVIDER=$prov "$info" --json)
	check=$(printf '%s' "$out" | check_json "$prov" 0)
	[ "$check" = ok ] && ok "$prov, FABNET_DMABUF=0: JSON names the reason" || ko "$prov, FABNET_DMABUF=0: JSON" "$check"
	human=$(env -u FABNET_DMABUF FABNET_PROVIDER=$prov "$info")
	case "$human" in *"ptrSupport    HOST"*"configuration:"*) ok "$prov: human output" ;; *) ko "$prov: human output" "missing sections" ;; esac
	case "$human" in
	*"|DMABUF"*"DMABUF:     remote addresses"*|*"no DMABUF:  "?*) ok "$prov: human output explains DMABUF" ;;
	*) ko "$prov: human output" "no DMABUF line" ;;
	esac
done

FABNET_PROVIDER=no-such-provider "$info" >/dev/null 2>&1
rc=$?
[ $rc -eq 1 ] && ok "unknown provider: exit 1" || ko "unknown provider" "exit $rc"
FABNET_EAGER_MAX=lots "$info" >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && ok "bad configuration: exit 2" || ko "bad configuration" "exit $rc"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
