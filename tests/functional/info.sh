#!/usr/bin/env bash
# fabnet-info against the providers actually present: the JSON parses, every
# bit not advertised has a reason, the DMABUF decision matches the libfabric
# we were built with, and the exit status says whether a device is usable.
set -u
info=${FABNET_INFO:?path to fabnet-info}
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

for prov in tcp shm; do
	out=$(FABNET_PROVIDER=$prov "$info" --json); rc=$?
	[ $rc -eq 0 ] && ok "$prov: exit 0 with a usable device" || ko "$prov: exit status" "$rc"
	check=$(printf '%s' "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
built = d["libfabric_built"]
errs = []
if not d["devices"]: errs.append("no device")
for dev in d["devices"]:
    if dev["provider"].split(";")[0] != sys.argv[1]: errs.append("provider " + dev["provider"])
    ps = dev["ptr_support"]
    if not ps["HOST"]: errs.append("HOST not advertised")
    for bit in ("CUDA", "DMABUF"):
        if not ps[bit] and not dev["not_advertised"].get(bit): errs.append("no reason for " + bit)
    major, minor = map(int, built.split("."))
    if (major, minor) < (1, 20):
        if ps["DMABUF"]: errs.append("DMABUF advertised without FI_MR_DMABUF")
        elif "FI_MR_DMABUF not declared" not in dev["not_advertised"]["DMABUF"]: errs.append("wrong DMABUF reason")
    if ps["CUDA"]: errs.append("CUDA advertised on a machine without a GPU")
print("ok" if not errs else "; ".join(errs))
' "$prov" 2>&1)
	[ "$check" = ok ] && ok "$prov: JSON parses and explains every bit" || ko "$prov: JSON" "$check"
	human=$(FABNET_PROVIDER=$prov "$info")
	case "$human" in *"ptrSupport    HOST"*"configuration:"*) ok "$prov: human output" ;; *) ko "$prov: human output" "missing sections" ;; esac
done

FABNET_PROVIDER=no-such-provider "$info" >/dev/null 2>&1
rc=$?
[ $rc -eq 1 ] && ok "unknown provider: exit 1" || ko "unknown provider" "exit $rc"
FABNET_EAGER_MAX=lots "$info" >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && ok "bad configuration: exit 2" || ko "bad configuration" "exit $rc"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
