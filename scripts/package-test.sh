#!/usr/bin/env bash
# The Debian packages, end to end: build them from debian/ with
# dpkg-buildpackage, run lintian (no errors allowed), install them with apt
# into a clean bookworm root made with mmdebstrap (their dependencies come from
# Debian's mirror, as on a user's machine), run fabnet-info, fabnet-info
# --doctor and a two-process fabnet-perf over tcp and shm there (every message
# verified), then purge them and check that the root is as it was: no file of
# the packages left, nothing else added, removed or changed.
#
# Usage: scripts/package-test.sh   (root: apt, chroot, mounts)
# Environment:
#   FABNET_PACKAGE_CHECK=1  run make check inside the package build (dh_auto_test,
#                           about 3 minutes more); by default the build has
#                           DEB_BUILD_OPTIONS=nocheck, as the other steps of
#                           scripts/test.sh run make check on the same source
#   FABNET_PACKAGE_OUT=DIR  keep the .deb files and logs in DIR
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

pass=0 fail=0 skip=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
skipped() { echo "SKIP $1: $2"; skip=$((skip + 1)); }
log() { echo "package-test: $*"; }

if [ "$(id -u)" != 0 ]; then
	echo "package-test: SKIP: needs root (apt, chroot, mounts)"
	exit 77
fi
export DEBIAN_FRONTEND=noninteractive
bash scripts/install-deps.sh dpkg-dev debhelper dh-autoreconf lintian mmdebstrap fakeroot || exit 1

tmp=$(mktemp -d /tmp/fabnet-package-test.XXXXXX)
chmod 755 "$tmp"
out=${FABNET_PACKAGE_OUT:-$tmp/out}
mkdir -p "$out"
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
version=$(sh scripts/version.sh) || exit 1

# ---- build --------------------------------------------------------------------
# From a copy of the files git knows (tracked, or new and not ignored), so
# that no build directory of the tree leaks into the packages.
mkdir -p "$tmp/build/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -co --exclude-standard -z | tar -cf - --null -T - | tar -C "$tmp/build/src" -xf -
else
	tar -cf - --exclude='./build*' --exclude=./debian/tmp . | tar -C "$tmp/build/src" -xf -
fi
opts=nocheck
[ "${FABNET_PACKAGE_CHECK:-0}" = 1 ] && opts=
if [ -n "$opts" ]; then
	log "building the packages (about 1 minute; DEB_BUILD_OPTIONS=$opts)"
else
	log "building the packages with make check (about 4 minutes)"
fi
start=$SECONDS
if (cd "$tmp/build/src" && DEB_BUILD_OPTIONS=$opts nice -n 10 dpkg-buildpackage -us -uc -b) \
	>"$out/build.log" 2>&1; then
	ok "dpkg-buildpackage -us -uc -b ($((SECONDS - start)) s)"
else
	ko "dpkg-buildpackage" "$(tail -15 "$out/build.log")"
	echo "package-test: $pass passed, $fail failed, $skip skipped"
	exit 1
fi
cp "$tmp"/build/*.deb "$tmp"/build/*.changes "$tmp"/build/*.buildinfo "$out/"
debs=()
for p in libnccl-net-fabnet fabnet-tools libnccl-net-fabnet-default; do
	debs+=("$(ls "$out/${p}_${version}"-*_*.deb 2>/dev/null | head -1)")
done

# lintian: errors fail the test; warnings are listed. Overridden tags (with
# the reason in debian/*.lintian-overrides) are shown too, which also proves
# that lintian looked at the packages: it skips a .changes it cannot read.
lintian --tag-display-limit 0 -I --show-overrides "$out"/*.changes >"$out/lintian.txt" 2>&1
if grep -q '^E: ' "$out/lintian.txt"; then
	ko "lintian" "$(grep '^E: ' "$out/lintian.txt" | head -10)"
elif ! grep -q '^O: libnccl-net-fabnet: ' "$out/lintian.txt"; then
	ko "lintian" "did not check the packages: $(head -5 "$out/lintian.txt")"
else
	ok "lintian: no errors, $(grep -c '^W: ' "$out/lintian.txt") warnings, $(grep -c '^O: ' "$out/lintian.txt") overridden"
fi
grep -E '^(W|I|O): ' "$out/lintian.txt" | sed 's/^/  lintian /'

# The packages' metadata: versions from AC_INIT, dependencies from shlibs.
for deb in "${debs[@]}"; do
	name=$(dpkg-deb -f "$deb" Package)
	v=$(dpkg-deb -f "$deb" Version)
	[ "${v%-*}" = "$version" ] && ok "$name: version $v (AC_INIT $version)" ||
		ko "$name: version" "$v, configure.ac says $version"
done
deps=$(dpkg-deb -f "${debs[0]}" Depends)
lf=$(pkg-config --modversion libfabric)
case $deps in
*"libfabric1 (>= $lf)"*"libhwloc15"*|*"libhwloc15"*"libfabric1 (>= $lf)"*)
	ok "libnccl-net-fabnet depends on libfabric1 (>= $lf, the build's) and libhwloc15" ;;
*) ko "libnccl-net-fabnet: Depends" "$deps" ;;
esac

# ---- a clean bookworm root ------------------------------------------------------
tarball=$(bash scripts/bookworm-root.sh) || exit 1
root=$tmp/root
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$tmp/mnt"
cp "${debs[@]}" "$tmp/mnt/"
in_mnt=()
for deb in "${debs[@]}"; do in_mnt+=("/mnt/$(basename "$deb")"); done
chmod 755 "$tmp/mnt"
chmod 644 "$tmp"/mnt/*.deb

# in_root COMMAND...: runs in the root with /proc, /sys, a private /dev/shm and the
# packages at /mnt, mounted in a private mount namespace that ends with it.
in_root() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --fork sh -c '
		r=$1; m=$2; shift 2
		mount --make-rprivate / &&
		mount -t proc proc "$r/proc" &&
		mount --rbind /sys "$r/sys" &&
		mount -t tmpfs -o size=512m tmpfs "$r/dev/shm" &&
		mount --bind "$m" "$r/mnt" &&
		exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$root" "$tmp/mnt" "$@"
}

# snapshot FILE: every path of the root with its type, mode, owner and, for
# files and links, the content's hash or the target. Left out: apt's and
# dpkg's bookkeeping and logs, which record the install and the removal
# (dpkg's is checked above), and the backups and lock the shadow tools write.
# A dependency's system group is allowed to stay: libibverbs1 adds the group
# rdma, and Debian keeps system groups when a package is purged.
kept_groups='^rdma:'
snapshot() {
	local prune=(\( -path ./proc -o -path ./sys -o -path ./dev/shm -o -path ./mnt -o -path ./var/log
		-o -path ./var/cache/apt -o -path ./var/cache/ldconfig -o -path ./var/lib/dpkg
		-o -path ./var/lib/apt/extended_states -o -path ./etc/group- -o -path ./etc/gshadow-
		-o -path ./run/adduser \) -prune -o)
	(cd "$root" && find . -xdev "${prune[@]}" -printf '%p %y %m %u %g %l\n' | sort) >"$1.paths"
	(cd "$root" && find . -xdev "${prune[@]}" -type f ! -path ./etc/group ! -path ./etc/gshadow \
		-print0 | sort -z | xargs -0 sha256sum
	 for f in ./etc/group ./etc/gshadow; do
		echo "$(grep -Ev "$kept_groups" "$f" | sha256sum | cut -c1-64)  $f (without $kept_groups)"
	 done) >"$1.sums"
}

log "updating apt's lists in a clean bookworm root (about 10 s)"
if ! in_root apt-get update -qq >"$out/apt-update.log" 2>&1; then
	ko "apt-get update in the root" "$(tail -5 "$out/apt-update.log")"
	echo "package-test: $pass passed, $fail failed, $skip skipped"
	exit 1
fi
installed() { in_root dpkg-query -W -f '${Package} ${Version} ${Status}\n' | grep ' installed$' | sort; }
snapshot "$tmp/before"
installed >"$tmp/before.pkgs"
names=(libnccl-net-fabnet fabnet-tools libnccl-net-fabnet-default)
if in_root apt-get install -y -qq --no-install-recommends "${in_mnt[@]}" \
	>"$out/install.log" 2>&1; then
	ok "apt-get install of the three packages into a clean bookworm root"
else
	ko "apt-get install" "$(tail -10 "$out/install.log")"
	echo "package-test: $pass passed, $fail failed, $skip skipped"
	exit 1
fi
in_root dpkg -L "${names[@]}" | sort -u >"$tmp/owned"

# ---- the packages at work -------------------------------------------------------
json_ok() { # FILE PYTHON-EXPRESSION-ON-d: prints ok or what is wrong
	python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print("ok" if eval("(" + sys.argv[2] + ")") else "unexpected: " + json.dumps(d)[:300])' "$@" 2>&1
}

in_root env FABNET_PROVIDER=tcp fabnet-info >"$out/info.txt" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^fabnet-info: libfabric .*, [1-9][0-9]* usable$' "$out/info.txt" &&
	ok "fabnet-info (tcp)" || ko "fabnet-info" "exit $rc: $(head -3 "$out/info.txt")"
for prov in tcp shm; do
	in_root env FABNET_PROVIDER=$prov sh -c 'fabnet-info --json >/mnt/info.json'
	res=$(json_ok "$tmp/mnt/info.json" \
		'd["usable_devices"] >= 1 and all(x["provider"].split(";")[0] == "'$prov'" for x in d["devices"])')
	[ "$res" = ok ] && ok "fabnet-info --json ($prov)" || ko "fabnet-info --json ($prov)" "$res"
	# no --plugin: the installed plugin is found by name, as NCCL finds it
	in_root fabnet-perf -p $prov -m lat,uni,bidir -b 1 -e 4M -f 8 --iters 20 --warmup 2 \
		--lat-iters 200 --check all --json /mnt/perf.json >"$out/perf-$prov.txt" 2>&1
	rc=$?
	res=$([ $rc -eq 0 ] && json_ok "$tmp/mnt/perf.json" 'd["ok"] is True and d["ranks"] == 2 and
		{r["mode"] for r in d["results"]} == {"uni", "bidir"} and
		all(r["wrong"] == 0 and r["algbw_GBps"] > 0 for r in d["results"]) and
		d["latency"]["wrong"] == 0 and d["latency"]["median_us"] > 0' ||
		echo "exit $rc: $(tail -3 "$out/perf-$prov.txt")")
	[ "$res" = ok ] && ok "fabnet-perf, 2 processes, $prov, every message verified" ||
		ko "fabnet-perf ($prov)" "$res"
	rm -f "$tmp/mnt/info.json" "$tmp/mnt/perf.json"
done
# libnccl-net-fabnet-default: NCCL's default name loads fabnet's tables
in_root fabnet-perf --plugin libnccl-net.so -p shm -m uni -b 64K -e 64K --iters 4 \
	>"$out/perf-default.txt" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^# fabnet-perf: libnccl-net.so (ncclNetPlugin_v[0-9]* "fabnet")' "$out/perf-default.txt" &&
	ok "libnccl-net.so (libnccl-net-fabnet-default) loads fabnet" ||
	ko "libnccl-net.so" "exit $rc: $(head -2 "$out/perf-default.txt")"
v=$(in_root fabnet-perf --version)
[ "$v" = "fabnet-perf (fabnet) $version" ] && ok "fabnet-perf --version: $version" ||
	ko "fabnet-perf --version" "'$v'"
for page in fabnet-info fabnet-perf; do
	zcat "$root/usr/share/man/man1/$page.1.gz" 2>/dev/null | grep -q "^\.TH .*\"fabnet $version\"" &&
		ok "man page $page(1), version $version" || ko "man page $page(1)" "missing or wrong version"
done

# The doctor (fabnet-info --doctor, the agreed interface): NCCL_NET_PLUGIN=fabnet
# must find the installed plugin, and the loopback self-test must pass.
in_root env NCCL_NET_PLUGIN=fabnet FABNET_PROVIDER=tcp fabnet-info --doctor >"$out/doctor.txt" 2>&1
rc_text=$?
if [ $rc_text -eq 2 ] && grep -q '^usage: fabnet-info' "$out/doctor.txt"; then
	skipped "fabnet-info --doctor" "this fabnet-info has no --doctor yet"
else
	in_root env NCCL_NET_PLUGIN=fabnet FABNET_PROVIDER=tcp sh -c 'fabnet-info --doctor --json >/mnt/doctor.json'
	rc=$?
	res=$(json_ok "$tmp/mnt/doctor.json" '{"ok": 0, "warn": 1, "error": 2}.get(d["verdict"]) == '$rc' and '$rc' != 2 and
		{f["id"]: f["severity"] for f in d["findings"]}.get("nccl-loads-plugin") == "ok" and
		{f["id"]: f["severity"] for f in d["findings"]}.get("selftest") == "ok" and
		all(all(isinstance(f.get(k), str) for k in ("id", "severity", "what", "why", "fix")) for f in d["findings"])')
	[ "$res" = ok ] && ok "fabnet-info --doctor --json: verdict matches exit $rc, plugin found, self-test ok" ||
		ko "fabnet-info --doctor --json (exit $rc)" "$res"
	[ "$rc_text" = "$rc" ] && ok "fabnet-info --doctor: exit $rc_text, as --json" ||
		ko "fabnet-info --doctor" "text exit $rc_text, JSON exit $rc"
	rm -f "$tmp/mnt/doctor.json"
fi

# ---- removal ----------------------------------------------------------------------
if in_root apt-get purge -y -qq --autoremove "${names[@]}" >"$out/purge.log" 2>&1; then
	ok "apt-get purge --autoremove"
else
	ko "apt-get purge" "$(tail -10 "$out/purge.log")"
fi
in_root apt-get clean
left=
while read -r f; do
	[ -e "$root$f" ] || [ -L "$root$f" ] || continue
	[ -d "$root$f" ] && ! [ -L "$root$f" ] && continue # shared directories (usr/lib/...)
	left="$left $f"
done <"$tmp/owned"
[ -z "$left" ] && ok "no file of the packages is left" || ko "files left" "$left"
left=$(cd "$root/var/lib/dpkg/info" && for f in libnccl-net-fabnet* fabnet-tools*; do
	[ -e "$f" ] && echo "$f"; done)
[ -z "$left" ] && ok "dpkg's database has forgotten the packages" || ko "dpkg database" "$left"
# the dependencies apt pulled in (libfabric1, libhwloc15, ...) went with --autoremove
installed >"$tmp/after.pkgs"
if cmp -s "$tmp/before.pkgs" "$tmp/after.pkgs"; then
	ok "the installed packages are those of before ($(wc -l <"$tmp/before.pkgs"))"
else
	ko "installed packages" "$(diff "$tmp/before.pkgs" "$tmp/after.pkgs" | grep '^[<>]' | head -10 | tr '\n' ' ')"
fi
snapshot "$tmp/after"
diff "$tmp/before.paths" "$tmp/after.paths" >"$out/paths.diff"
diff "$tmp/before.sums" "$tmp/after.sums" >"$out/sums.diff"
if [ -s "$out/paths.diff" ] || [ -s "$out/sums.diff" ]; then
	ko "the root after removal" "differs from before install: $(head -c 600 "$out/paths.diff" "$out/sums.diff")"
else
	ok "the root after removal is as before install ($(wc -l <"$tmp/before.paths") paths, $(wc -l <"$tmp/before.sums") files hashed)"
fi

echo "package-test: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
