#!/usr/bin/env bash
# fabnet-info --doctor: every finding driven by changing the environment
# (variables, limits, capabilities, a seccomp filter, fake device and PCI
# directories, a mount namespace for /dev/shm), checking each finding's
# severity, the verdict and the exit status, in JSON and in text.
#
# Each run starts from an empty environment (env -i) plus what the case sets,
# so the caller's NCCL_*, FI_* and FABNET_* settings cannot leak in. The
# baseline is the shm provider with NCCL_NET_PLUGIN naming the built plugin:
# deterministic on any machine. Cases that need root (mknod, a mount
# namespace, dropping capabilities) are skipped, and counted, without it.
set -u
info=${FABNET_INFO:?path to fabnet-info}
plugin=${FABNET_PLUGIN:?path to the plugin}
srcdir=${FABNET_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
deny=${FABNET_DENY_CMA:-$(dirname "$info")/tests/functional/fabnet-deny-cma}
pass=0 fail=0 skip=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
skipped() { echo "SKIP $1: $2"; skip=$((skip + 1)); }

tmp=$(mktemp -d /tmp/fabnet-doctor.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # the case run as nobody reads in it
root=0; [ "$(id -u)" = 0 ] && root=1

base=(PATH="$PATH" HOME="${HOME:-/tmp}" NCCL_NET_PLUGIN="$plugin")

# doctor [--pre PREFIX-COMMAND... --] NAME=VALUE... : runs the doctor in JSON
# into $tmp/out.json, its exit status in $rc; without the live self-test (about
# half the time of a run) unless called as doctor_st.
with_selftest=0
doctor() {
	local pre=() opts=(--doctor --json)
	if [ "${1:-}" = "--pre" ]; then
		shift
		while [ "$1" != "--" ]; do pre+=("$1"); shift; done
		shift
	fi
	[ $with_selftest = 1 ] || opts+=(--no-selftest)
	"${pre[@]}" env -i "${base[@]}" "$@" "$info" "${opts[@]}" >"$tmp/out.json" 2>"$tmp/err.txt"
	rc=$?
	with_selftest=0
}
doctor_st() { with_selftest=1; doctor "$@"; }

# expect NAME ID SEVERITY [SUBSTRING-OF-WHAT]: checks one finding of the last run.
expect() {
	local name=$1 id=$2 sev=$3 sub=${4:-}
	local got
	got=$(python3 - "$tmp/out.json" "$id" "$sev" "$sub" <<'EOF'
import json, sys
path, fid, sev, sub = sys.argv[1:5]
try:
    d = json.load(open(path))
except Exception as e:
    print("no JSON: %s" % e); sys.exit()
f = [x for x in d["findings"] if x["id"] == fid]
if len(f) != 1:
    print("%d findings with id %s" % (len(f), fid)); sys.exit()
f = f[0]
if f["severity"] != sev:
    print("severity %s, want %s: %s" % (f["severity"], sev, f["what"][:400])); sys.exit()
if sub and sub not in f["what"] + "\n" + f["fix"]:
    print("%r not in: %s | fix: %s" % (sub, f["what"][:600], f["fix"][:300])); sys.exit()
print("ok")
EOF
)
	[ "$got" = ok ] && ok "$name: $id is $sev" || ko "$name: $id" "$got"
}

# verdict NAME VERDICT: the verdict and the exit status that goes with it.
verdict() {
	local want_rc
	case $2 in ok) want_rc=0 ;; warn) want_rc=1 ;; error) want_rc=2 ;; esac
	local got
	got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' \
		"$tmp/out.json" 2>/dev/null)
	if [ "$got" = "$2" ] && [ "$rc" = "$want_rc" ]; then
		ok "$1: verdict $2, exit $rc"
	else
		ko "$1: verdict" "verdict '$got' exit $rc, want $2 exit $want_rc ($(head -c 300 "$tmp/err.txt"))"
	fi
}

# ---- the baseline: everything fine, every id once, a well-formed document ---------
doctor_st FABNET_PROVIDER=shm
verdict "baseline (shm)" ok
check=$(python3 - "$tmp/out.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ids = ["nccl-loads-plugin", "nccl-net", "nccl-ib-settings", "fabnet-config",
       "fabnet-unknown-settings", "fi-provider", "libfabric-settings", "libfabric-version",
       "providers", "efa-device", "memlock", "fork-safety", "hugepages", "shm-cma", "dev-shm",
       "rail-affinity", "selftest"]
errs = []
if set(d) != {"verdict", "findings"}: errs.append("keys %s" % sorted(d))
got = [f["id"] for f in d["findings"]]
if sorted(got) != sorted(ids): errs.append("ids %s" % got)
for f in d["findings"]:
    if set(f) != {"id", "severity", "what", "why", "fix"}: errs.append("fields %s" % sorted(f))
    if f["severity"] not in ("ok", "info", "warn", "error"): errs.append(f["severity"])
    for k in ("what", "why", "fix"):
        if not isinstance(f[k], str) or not f[k].strip(): errs.append("%s.%s empty" % (f["id"], k))
print("ok" if not errs else "; ".join(errs))
EOF
)
[ "$check" = ok ] && ok "baseline: 17 stable ids, each once, every field a string" || ko "baseline: document" "$check"
expect "baseline" nccl-loads-plugin ok "$plugin"
expect "baseline" selftest ok "(shm)"
expect "baseline" providers ok "provider shm"

# text mode: the same findings, one block each, then the verdict line
env -i "${base[@]}" FABNET_PROVIDER=shm "$info" --doctor >"$tmp/out.txt" 2>&1; trc=$?
nblocks=$(grep -cE '^\[(ok|info|warn|error)\] [a-z-]+$' "$tmp/out.txt")
last=$(tail -1 "$tmp/out.txt")
if [ "$trc" = 0 ] && [ "$nblocks" = 17 ] && [[ $last == "verdict: ok: "* ]]; then
	ok "text: 17 blocks, verdict line last, exit 0"
else
	ko "text" "exit $trc, $nblocks blocks, last line '$last'"
fi
grep -q '^  fix ' "$tmp/out.txt" && ok "text: info blocks say what to do" || ko "text" "no fix line"

# ---- selftest over tcp on the loopback interface ---------------------------------
doctor_st FABNET_PROVIDER=tcp FABNET_IFACE=lo
expect "tcp over lo" selftest ok "(lo)"
expect "tcp over lo" providers ok "provider tcp"

# ---- selftest: a device that cannot bind its address, beside two that can ------------
# In a network namespace: a veth pair whose fdv0 keeps its IPv6 link-local
# address tentative (duplicate address detection stretched to minutes), so
# libfabric lists it but nothing can bind it; fdv1 and lo work.
ns=
if [ $root = 1 ] && command -v ip >/dev/null && ip netns add "fabnet-doctor-$$" 2>/dev/null; then
	ns=fabnet-doctor-$$
	trap 'rm -rf "$tmp"; ip netns del "$ns" 2>/dev/null' EXIT
	ip -n "$ns" link set lo up
	ip -n "$ns" link add fdv0 type veth peer name fdv1
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.fdv0.dad_transmits=50 \
		net.ipv6.neigh.fdv0.retrans_time_ms=10000
	ip -n "$ns" link set fdv1 up
	ip -n "$ns" link set fdv0 up
	for _ in $(seq 50); do # until fdv1's address is usable (fdv0's stays tentative)
		a=$(ip -n "$ns" -6 addr show dev fdv1)
		[[ $a == *inet6* && $a != *tentative* ]] && break
		sleep 0.2
	done
	doctor_st --pre ip netns exec "$ns" -- FABNET_PROVIDER=tcp FABNET_ALLOW_LOOPBACK=1
	verdict "a device that cannot bind" error
	expect "a device that cannot bind" selftest error "device 0 (fdv0): listen"
	expect "a device that cannot bind" selftest error "FABNET_IFACE=fdv1,lo"
	doctor_st --pre ip netns exec "$ns" -- FABNET_PROVIDER=tcp FABNET_ALLOW_LOOPBACK=1 FABNET_IFACE=fdv1,lo
	expect "the fix the doctor gave" selftest ok "(fdv1)"
	ip netns del "$ns"
else
	skipped "a device that cannot bind" "needs root and ip netns"
fi

# ---- nccl-loads-plugin: NCCL's loader rules ----------------------------------------
libdir=$(dirname "$plugin")
base=(PATH="$PATH" HOME="${HOME:-/tmp}")
doctor_st FABNET_PROVIDER=shm
verdict "NCCL_NET_PLUGIN unset" error
expect "NCCL_NET_PLUGIN unset" nccl-loads-plugin error "libnccl-net.so: not found"
expect "NCCL_NET_PLUGIN unset" nccl-loads-plugin error "NCCL_NET_PLUGIN=fabnet"
expect "NCCL_NET_PLUGIN unset (the build's plugin still tested)" selftest ok "NCCL would not load this library"
doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=fabnet
expect "NCCL_NET_PLUGIN=fabnet, not on the library path" nccl-loads-plugin error "libnccl-net-fabnet.so: not found"
doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=fabnet LD_LIBRARY_PATH="$libdir"
verdict "NCCL_NET_PLUGIN=fabnet on LD_LIBRARY_PATH" ok
expect "NCCL_NET_PLUGIN=fabnet on LD_LIBRARY_PATH" nccl-loads-plugin ok "libnccl-net-fabnet.so: loads"
doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=none
expect "NCCL_NET_PLUGIN=none" nccl-loads-plugin error "NCCL_NET_PLUGIN=none"

# libraries NCCL would find but not use: one with a missing dependency, one
# without a table, one that is another plugin (all built here)
cc=${CC:-cc}
if command -v "$cc" >/dev/null 2>&1; then
	echo 'int fabnet_doctor_missing(void) { return 1; }' >"$tmp/m.c"
	echo 'extern int fabnet_doctor_missing(void); int f(void) { return fabnet_doctor_missing(); }' >"$tmp/b.c"
	echo 'int nothing_here;' >"$tmp/n.c"
	echo 'const char *ncclNetPlugin_v6[24] = {"othernet"};' >"$tmp/o.c"
	"$cc" -shared -fPIC -o "$tmp/libfabnet-doctor-missing.so" "$tmp/m.c" &&
	"$cc" -shared -fPIC -o "$tmp/libnccl-net-broken.so" "$tmp/b.c" -L"$tmp" -lfabnet-doctor-missing &&
	"$cc" -shared -fPIC -o "$tmp/libnccl-net-notable.so" "$tmp/n.c" &&
	"$cc" -shared -fPIC -o "$tmp/libnccl-net-other.so" "$tmp/o.c" &&
	rm -f "$tmp/libfabnet-doctor-missing.so"
	doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=broken LD_LIBRARY_PATH="$tmp:$libdir"
	expect "a plugin whose dependency is missing" nccl-loads-plugin error "libfabnet-doctor-missing.so"
	expect "a plugin whose dependency is missing" nccl-loads-plugin error "make the library load"
	doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=notable,fabnet LD_LIBRARY_PATH="$tmp:$libdir"
	expect "a library without a table, then fabnet" nccl-loads-plugin ok "exports no ncclNetPlugin"
	doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=other,fabnet LD_LIBRARY_PATH="$tmp:$libdir"
	verdict "another plugin first in the list" warn
	expect "another plugin first in the list" nccl-loads-plugin warn "named 'othernet'"
	doctor FABNET_PROVIDER=shm NCCL_NET_PLUGIN=other LD_LIBRARY_PATH="$tmp:$libdir"
	expect "only another plugin" nccl-loads-plugin error "initialise $tmp/libnccl-net-other.so"
else
	skipped "plugins NCCL would not use" "no C compiler ($cc)"
fi
base=(PATH="$PATH" HOME="${HOME:-/tmp}" NCCL_NET_PLUGIN="$plugin")

# ---- NCCL and fabnet settings --------------------------------------------------------
doctor FABNET_PROVIDER=shm NCCL_NET=IB
verdict "NCCL_NET=IB" error
expect "NCCL_NET=IB" nccl-net error "NCCL_NET=IB"
doctor FABNET_PROVIDER=shm NCCL_NET=fabnet
verdict "NCCL_NET=fabnet" ok
expect "NCCL_NET=fabnet" nccl-net info
doctor FABNET_PROVIDER=shm NCCL_IB_HCA=mlx5_0
verdict "NCCL_IB_HCA" warn
expect "NCCL_IB_HCA" nccl-ib-settings warn "FABNET_IFACE"
doctor FABNET_PROVIDER=shm NCCL_IB_GID_INDEX=3 NCCL_IB_DISABLE=1
verdict "NCCL_IB_GID_INDEX" ok
expect "NCCL_IB_GID_INDEX" nccl-ib-settings info "NCCL_IB_GID_INDEX"
doctor_st FABNET_PROVIDER=shm FABNET_EAGER_MAX=lots
verdict "FABNET_EAGER_MAX=lots" error
expect "FABNET_EAGER_MAX=lots" fabnet-config error "FABNET_EAGER_MAX"
expect "FABNET_EAGER_MAX=lots" selftest error "NOT serving this job"
doctor FABNET_PROVIDER=shm FABNET_RAILS=2
expect "FABNET_RAILS=2" fabnet-config ok "FABNET_RAILS=2"
doctor FABNET_PROVIDER=shm FABNET_PROVDER=tcp
verdict "a misspelt FABNET_ variable" warn
expect "a misspelt FABNET_ variable" fabnet-unknown-settings warn "did you mean FABNET_PROVIDER"

# ---- FI_PROVIDER and libfabric settings ------------------------------------------------
doctor_st FI_PROVIDER=no-such-provider
verdict "FI_PROVIDER absent" error
expect "FI_PROVIDER absent" fi-provider error "names no provider"
expect "FI_PROVIDER absent" providers error "no-such-provider"
expect "FI_PROVIDER absent" selftest error "init"
doctor_st FI_PROVIDER=shm
expect "FI_PROVIDER=shm" fi-provider ok
expect "FI_PROVIDER=shm" selftest ok "(shm)"
doctor FABNET_PROVIDER=shm FI_PROVIDER=tcp
expect "FABNET_PROVIDER hidden by FI_PROVIDER" fi-provider error "hides it"
doctor FI_PROVIDER=tcp,shm
expect "FI_PROVIDER list" fi-provider error "list of 2"
doctor FI_PROVIDER=shm,no-such-provider FABNET_PROVIDER=shm
expect "FI_PROVIDER with one absent name" fi-provider warn "no no-such-provider"
doctor FABNET_PROVIDER=shm FI_EFA_USE_DEVICE_RDMA=0
verdict "FI_EFA_USE_DEVICE_RDMA=0" warn
expect "FI_EFA_USE_DEVICE_RDMA=0" libfabric-settings warn "emulates"
doctor FABNET_PROVIDER=shm
expect "baseline" libfabric-version ok "built against libfabric"

# A libfabric on LD_LIBRARY_PATH other than the build's (libfabric 2.1 builds:
# the plugin's RUNPATH loses to LD_LIBRARY_PATH, fabnet-info's RPATH does not).
runpath=$(readelf -d "$plugin" 2>/dev/null | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p' | head -1)
other=$(ldconfig -p 2>/dev/null | sed -n 's/.*libfabric\.so\.1 .*=> \(.*\)\/libfabric\.so\.1$/\1/p' | head -1)
if [ -n "$runpath" ] && [ -e "$runpath/libfabric.so.1" ] && [ -n "$other" ] && [ "$other" != "$runpath" ]; then
	doctor_st FABNET_PROVIDER=shm LD_LIBRARY_PATH="$other"
	if grep -q 'does not load' "$tmp/out.json"; then
		expect "an older libfabric first on LD_LIBRARY_PATH" nccl-loads-plugin error "older than the one fabnet was built against"
		expect "an older libfabric first on LD_LIBRARY_PATH" selftest error "load"
	else
		expect "another libfabric first on LD_LIBRARY_PATH" libfabric-version warn "$other"
	fi
else
	skipped "another libfabric on LD_LIBRARY_PATH" "the plugin has no RUNPATH to a libfabric, or there is no other"
fi

# ---- providers -------------------------------------------------------------------------
doctor FABNET_PROVIDER=tcp FABNET_IFACE=no-such-nic0
verdict "FABNET_IFACE matching nothing" error
expect "FABNET_IFACE matching nothing" providers error "no-such-nic0"

# ---- EFA: devices, memlock, fork safety, hugepages --------------------------------------
mkdir -p "$tmp/dev-empty" "$tmp/dev-file" "$tmp/dev-null" "$tmp/dev-nodrv"
: >"$tmp/dev-file/uverbs0"
doctor FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/no-such-dir"
expect "efa, no /dev/infiniband" efa-device error "--device"
expect "efa asked for, absent" providers error "efa"
doctor FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/dev-empty"
expect "efa, no uverbs device" efa-device error "no uverbs device"
doctor FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/dev-file"
expect "efa, uverbs0 a regular file" efa-device error "not a character device"
doctor FABNET_PROVIDER=shm FABNET_DOCTOR_DEV_DIR="$tmp/no-such-dir"
expect "not an EFA job" efa-device info "not checked"
# an EFA NIC on the (fake) PCI bus makes it an EFA job whatever the provider
mkdir -p "$tmp/pci/0000:10:00.0" "$tmp/pci/0000:20:00.0" "$tmp/pci/0000:30:00.0"
for d in 0000:10:00.0 0000:20:00.0; do echo 0x1d0f >"$tmp/pci/$d/vendor"; echo 0xefa1 >"$tmp/pci/$d/device"; done
echo 0x1d0f >"$tmp/pci/0000:30:00.0/vendor"; echo 0xec20 >"$tmp/pci/0000:30:00.0/device" # ENA: not RDMA
doctor FABNET_PROVIDER=shm FABNET_DOCTOR_PCI_DIR="$tmp/pci" FABNET_DOCTOR_DEV_DIR="$tmp/no-such-dir"
expect "EFA NICs on the bus, none passed in" efa-device error "2 EFA NICs on the PCI bus"
expect "EFA NICs on the bus, another provider" providers warn "2 EFA NICs"
if [ $root = 1 ]; then
	mknod "$tmp/dev-null/uverbs0" c 1 3
	mknod "$tmp/dev-nodrv/uverbs0" c 231 192
	doctor FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/dev-null"
	expect "efa, uverbs0 opens" efa-device ok "1 uverbs device open"
	doctor FABNET_PROVIDER=shm FABNET_DOCTOR_PCI_DIR="$tmp/pci" FABNET_DOCTOR_DEV_DIR="$tmp/dev-null"
	expect "2 EFA NICs, 1 uverbs device" efa-device warn "1 uverbs device (uverbs0) for 2 EFA NICs"
	if [ ! -e /sys/class/infiniband_verbs/uverbs0 ]; then
		doctor FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/dev-nodrv"
		expect "efa, uverbs0 without a driver" efa-device error "modprobe efa"
	fi
	chmod 600 "$tmp/dev-null/uverbs0"
	asnobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	# through env, as the doctor runs: setpriv alone may reach a binary that
	# nobody cannot (a build under a private directory such as mktemp -d)
	if "${asnobody[@]}" env -i "${base[@]}" "$info" --help >/dev/null 2>&1; then
		doctor --pre "${asnobody[@]}" -- FABNET_PROVIDER=efa FABNET_DOCTOR_DEV_DIR="$tmp/dev-null"
		expect "efa, uverbs0 not accessible" efa-device error "Permission denied"
	else
		skipped "uverbs0 not accessible" "fabnet-info does not run as nobody (it or its libraries lie in a private directory)"
	fi
else
	skipped "uverbs device nodes" "mknod needs root"
fi

# memlock: the hard limit may not be raised here (no CAP_SYS_RESOURCE), so the
# need is made small with NCCL's and fabnet's own settings: 1 channel, 16 + 16
# bounce buffers: 1.3 MiB with GPUDirect, 18.6 MiB with host buffers.
nocap=(setpriv --inh-caps=-ipc_lock,-sys_ptrace --bounding-set=-ipc_lock,-sys_ptrace)
small=(FABNET_PROVIDER=efa NCCL_MAX_NCHANNELS=1 FABNET_RX_BUFFERS=16 FABNET_TX_BUFFERS=16)
hard=$(prlimit --memlock --raw --noheadings -o HARD 2>/dev/null)
[ "$hard" = unlimited ] && hard=$((1 << 40))
if { [ $root = 1 ] || ! grep -q '^CapEff:.*[^0]' /proc/self/status; } && [ "${hard:-0}" -ge $((4 << 20)) ]; then
	[ $root = 1 ] || nocap=()
	doctor --pre prlimit --memlock=65536:65536 "${nocap[@]}" -- "${small[@]}"
	expect "efa, memlock 64 KiB" memlock error "below even the GPUDirect need"
	doctor --pre prlimit --memlock=$((4 << 20)):$((4 << 20)) "${nocap[@]}" -- "${small[@]}"
	expect "efa, memlock 4 MiB" memlock warn "GPUDirect"
	doctor --pre prlimit --memlock=$((4 << 20)):$((4 << 20)) "${nocap[@]}" -- "${small[@]}" \
		NCCL_BUFFSIZE=65536 NCCL_LL128_BUFFSIZE=65536 NCCL_LL_BUFFSIZE=65536
	expect "efa, memlock 4 MiB, 64 KiB NCCL buffers" memlock ok "1 channel pins"
	doctor --pre prlimit --memlock=65536:65536 "${nocap[@]}" -- FABNET_PROVIDER=shm
	expect "shm, memlock 64 KiB" memlock info "does not pin"
else
	skipped "memlock" "capabilities that cannot be dropped, or a hard limit under 4 MiB"
fi
if prlimit --memlock=unlimited:unlimited true 2>/dev/null; then
	doctor --pre prlimit --memlock=unlimited:unlimited "${nocap[@]}" -- FABNET_PROVIDER=efa
	expect "efa, memlock unlimited" memlock ok "unlimited"
fi
if [ $root = 1 ]; then
	doctor --pre prlimit --memlock=65536:65536 -- FABNET_PROVIDER=efa
	expect "efa, memlock 64 KiB, CAP_IPC_LOCK" memlock ok "CAP_IPC_LOCK"
fi

# fork safety: rdma-core may say the kernel copies registered pages (then all is ok)
doctor FABNET_PROVIDER=efa
if grep -q 'fork support unneeded' "$tmp/out.json"; then
	expect "efa, copy-on-fork kernel" fork-safety ok "unneeded"
else
	expect "efa, no fork support" fork-safety warn "FI_EFA_FORK_SAFE=1"
	doctor FABNET_PROVIDER=efa FI_EFA_FORK_SAFE=1
	expect "efa, FI_EFA_FORK_SAFE=1" fork-safety ok "requested"
	doctor FABNET_PROVIDER=efa FI_EFA_FORK_SAFE=1 FI_EFA_USE_HUGE_PAGE=1
	expect "efa, fork safe and huge pages" fork-safety error "FI_EFA_USE_HUGE_PAGE"
	doctor FABNET_PROVIDER=efa RDMAV_FORK_SAFE=1 RDMAV_HUGEPAGES_SAFE=1
	expect "efa, RDMAV_HUGEPAGES_SAFE" fork-safety error "RDMAV_HUGEPAGES_SAFE"
fi
doctor FABNET_PROVIDER=shm
expect "not an EFA job" fork-safety info "not an EFA job"
expect "not an EFA job" hugepages info "not an EFA job"
doctor FABNET_PROVIDER=efa FI_EFA_USE_HUGE_PAGE=0
expect "efa, huge pages off" hugepages info "off"

# ---- shm: cross-memory attach and /dev/shm ------------------------------------------------
if [ -x "$deny" ]; then
	doctor --pre "$deny" -- FABNET_PROVIDER=shm
	rcd=$rc
	if [ $rcd = 77 ]; then
		skipped "shm-cma under seccomp" "the filter cannot be installed here"
	else
		verdict "shm, process_vm_readv refused" warn
		expect "shm, process_vm_readv refused" shm-cma warn "Operation not permitted"
		doctor --pre "$deny" -- FABNET_PROVIDER=tcp FABNET_IFACE=lo
		expect "tcp, process_vm_readv refused" shm-cma info "Operation not permitted"
	fi
else
	skipped "shm-cma under seccomp" "$deny not built"
fi
echo 1 >"$tmp/scope1"
echo 0 >"$tmp/scope0"
doctor FABNET_PROVIDER=shm FABNET_DOCTOR_PTRACE_SCOPE="$tmp/scope0"
expect "ptrace scope 0" shm-cma ok "ptrace_scope 0"
if [ $root = 1 ]; then
	doctor --pre "${nocap[@]}" -- FABNET_PROVIDER=shm FABNET_DOCTOR_PTRACE_SCOPE="$tmp/scope1"
	expect "ptrace scope 1, no CAP_SYS_PTRACE" shm-cma warn "scope 1"
	doctor FABNET_PROVIDER=shm FABNET_DOCTOR_PTRACE_SCOPE="$tmp/scope1"
	expect "ptrace scope 1, CAP_SYS_PTRACE" shm-cma ok "CAP_SYS_PTRACE"
fi

doctor FABNET_PROVIDER=shm FABNET_DOCTOR_SHM_DIR="$tmp/no-such-dir"
expect "no /dev/shm" dev-shm error "No such file"
if [ $root = 1 ] && unshare -m true 2>/dev/null; then
	doctor --pre unshare -m --propagation private sh -c \
		'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"' sh -- FABNET_PROVIDER=tcp FABNET_IFACE=lo
	expect "/dev/shm of 64 MiB" dev-shm warn "64 MiB"
	doctor --pre unshare -m --propagation private sh -c \
		'mount -t tmpfs -o size=2g tmpfs /dev/shm && exec "$@"' sh -- FABNET_PROVIDER=tcp FABNET_IFACE=lo
	expect "/dev/shm of 2 GiB" dev-shm ok "2048 MiB"
	doctor --pre unshare -m --propagation private sh -c \
		'mount -t tmpfs -o size=2g,ro tmpfs /dev/shm && exec "$@"' sh -- FABNET_PROVIDER=tcp FABNET_IFACE=lo
	expect "/dev/shm read-only" dev-shm error "not writable"
else
	skipped "/dev/shm size" "needs root and mount namespaces"
fi

# ---- rail-affinity: the accelerators' NICs from a topology ---------------------------------
doctor FABNET_PROVIDER=shm FABNET_TOPO_FILE="$srcdir/tests/topology/p5.xml"
expect "p5 topology" rail-affinity ok "sharing the switch"
doctor FABNET_PROVIDER=shm FABNET_TOPO_FILE="$srcdir/tests/topology/fallback.xml"
verdict "fallback topology" warn
expect "fallback topology" rail-affinity warn "host bridge"
doctor FABNET_PROVIDER=shm FABNET_TOPO_FILE="$tmp/no-such.xml"
expect "unreadable topology" rail-affinity info "no topology"

# ---- usage -----------------------------------------------------------------------------------
"$info" --help 2>&1 | grep -q -- '--doctor' && ok "--help names --doctor" || ko "--help" "no --doctor"
"$info" --doctor --bogus >/dev/null 2>&1; r=$?
[ $r = 2 ] && ok "--doctor --bogus: exit 2" || ko "--doctor --bogus" "exit $r"

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
