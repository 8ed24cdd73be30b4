#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# run-tests.sh TEST_BIN... [-- FUZZ_BIN...]
# Runs every Criterion binary and briefly every libFuzzer target, then prints
# one closing line "N passed, N failed". Kernel tests need root, BPF and
# cgroup2: when they are missing this fails (it never skips).
set -u
cd "$(dirname "$0")/.."

tests=() fuzzers=()
while [ $# -gt 0 ]; do
	case "$1" in
	--) shift; fuzzers=("$@"); break ;;
	*) tests+=("$1"); shift ;;
	esac
done

die() { echo "run-tests: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
[ "$(id -u)" = 0 ] || die "the kernel tests need root (they load BPF programs); run: sudo make check"
grep -q ' - cgroup2 ' /proc/self/mountinfo || die "no cgroup2 mount found in /proc/self/mountinfo"
[ -r /sys/kernel/btf/vmlinux ] || die "the kernel has no BTF (/sys/kernel/btf/vmlinux)"

passed=0 failed=0 failures=()
for t in "${tests[@]}"; do
	echo "=== $t"
	if [[ "$t" == *.sh ]]; then
		if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$t"); fi
		continue
	fi
	log=$(mktemp)
	"$t" --jobs "${PORTRES_TEST_JOBS:-2}" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	syn=$(grep 'Synthesis:' "$log" | tail -n 1)
	mapfile -t -O "${#failures[@]}" failures < <(grep -E '^\[(----|FAIL|CRASH)\]' "$log" | head -n 40 | sed "s|^|$(basename "$t"): |")
	rm -f "$log"
	if [ -z "$syn" ]; then
		echo "run-tests: $t printed no synthesis (exit $rc)"
		failed=$((failed + 1)); failures+=("$t: no synthesis (exit $rc)"); continue
	fi
	p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn")
	f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn")
	c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn")
	passed=$((passed + p)); failed=$((failed + f + c))
	[ "$rc" = 0 ] || [ $((f + c)) -gt 0 ] || failed=$((failed + 1))
done

for fz in "${fuzzers[@]}"; do
	name=$(basename "$fz")
	corpus=tests/fuzz/corpus/${name#fuzz_}
	echo "=== $fz (${PORTRES_FUZZ_SECONDS:-15} s)"
	work=$(mktemp -d)
	[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
	mkdir -p build/fuzz-artifacts
	if "$fz" -max_total_time="${PORTRES_FUZZ_SECONDS:-15}" -rss_limit_mb=2048 -print_final_stats=0 \
		-artifact_prefix="build/fuzz-artifacts/$name-" \
		"$work" >"$work.log" 2>&1; then
		passed=$((passed + 1)); tail -n 2 "$work.log"
	else
		failed=$((failed + 1)); failures+=("$fz"); tail -n 40 "$work.log"
	fi
	rm -rf "$work" "$work.log"
done

echo
# The failures again at the end, where a log cut to its tail still shows them.
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
