#!/usr/bin/env bash
# The man pages against the tools: every option a tool's --help names is in
# its man page, the pages carry the version the tools were built with, and
# man(1), where installed, renders them without a warning.
# Environment (make check sets them): FABNET_INFO, FABNET_PERF; FABNET_MANDIR
# (default: ./man, where configure writes the pages).
set -u
info=${FABNET_INFO:-$PWD/fabnet-info}
perf=${FABNET_PERF:-$PWD/fabnet-perf}
mandir=${FABNET_MANDIR:-$PWD/man}
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

version=$("$perf" --version | awk '{print $NF}')
[ -n "$version" ] && ok "fabnet-perf --version: $version" || ko "fabnet-perf --version" "no version"

for tool in "$info" "$perf"; do
	name=$(basename "$tool")
	page=$mandir/$name.1
	if [ ! -f "$page" ]; then
		ko "$name.1" "missing ($page)"
		continue
	fi
	# roff writes a dash as \- ; compare plain text.
	text=$(sed 's/\\-/-/g' "$page")
	missing=
	for opt in $("$tool" --help 2>&1 | grep -oE -- '--[a-z][a-z-]*' | sort -u); do
		grep -qF -- "$opt" <<<"$text" || missing="$missing $opt"
	done
	[ -z "$missing" ] && ok "$name.1 documents every option of --help" ||
		ko "$name.1" "does not document$missing"
	th=$(grep -m1 '^\.TH' "$page")
	case $th in
	*"\"fabnet $version\""*) ok "$name.1 carries version $version" ;;
	*) ko "$name.1" "version line is '$th', the tools are $version" ;;
	esac
	if command -v man >/dev/null 2>&1; then
		warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
		[ -z "$warnings" ] && ok "$name.1 renders without warnings" ||
			ko "$name.1 renders" "$(head -3 <<<"$warnings" | tr '\n' ' ')"
	fi
done

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
