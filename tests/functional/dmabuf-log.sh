#!/usr/bin/env bash
# Every regMrDmaBuf call leaves one INFO line that says what fabnet did with
# the dma-buf: "registered as a dma-buf" when NCCL_PTR_DMABUF is advertised,
# "registered by address instead of dma-buf: <reason>" when it is not (here:
# FABNET_DMABUF=0, or a libfabric without FI_MR_DMABUF). Runs fabnet-ft's
# dmabuf scenario on tcp and shm and counts its calls against the plugin's lines.
set -u
plugin=${FABNET_PLUGIN:?path to the plugin}
ft=${FABNET_FT:?path to fabnet-ft}
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for prov in tcp shm; do
	advertised=0 # with FABNET_DMABUF=1 (it runs first)
	for dmabuf in 1 0; do
		name="$prov, FABNET_DMABUF=$dmabuf"
		if ! FABNET_PROVIDER=$prov FABNET_DMABUF=$dmabuf NCCL_DEBUG=INFO \
			timeout 300 "$ft" --plugin "$plugin" --scenario dmabuf --verbose >"$out" 2>&1; then
			ko "$name" "fabnet-ft failed: $(grep -E 'FAIL|WARN' "$out" | head -3)"
			continue
		fi
		calls=$(grep -c '\] regMrDmaBuf(' "$out")
		as_dmabuf=$(grep -c 'fabnet: regMrDmaBuf on .*: [0-9]* bytes of host memory at .* registered as a dma-buf (fd [0-9]*, offset [0-9]*)' "$out")
		by_addr=$(grep -c 'fabnet: regMrDmaBuf on .*: [0-9]* bytes of host memory at .* registered by address instead of dma-buf: .' "$out")
		if grep -q '# dmabuf: advertised' "$out"; then
			want_dmabuf=$calls want_addr=0
			advertised=1
			[ "$dmabuf" = 1 ] || ko "$name" "NCCL_PTR_DMABUF advertised although FABNET_DMABUF=0"
		else
			want_dmabuf=0 want_addr=$calls
			# the setting is the reason only where the path exists (libfabric 1.20+)
			if [ "$dmabuf" = 0 ] && [ "$advertised" = 1 ] &&
				! grep -q 'instead of dma-buf: disabled by FABNET_DMABUF=0' "$out"; then
				ko "$name" "the fallback lines do not name FABNET_DMABUF=0 as the reason"
			fi
		fi
		if [ "$calls" -gt 0 ] && [ "$as_dmabuf" -eq "$want_dmabuf" ] && [ "$by_addr" -eq "$want_addr" ]; then
			ok "$name: $calls regMrDmaBuf calls, $as_dmabuf as dma-buf, $by_addr by address, each logged"
		else
			ko "$name" "$calls calls, but $as_dmabuf 'as a dma-buf' lines (want $want_dmabuf) and $by_addr 'by address' lines (want $want_addr)"
		fi
	done
done
echo "dmabuf-log: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
