#!/bin/bash
# Before and after: the same `spry bench` run by several spry binaries in
# turn (A B C A B C ...), so that a busy machine's drift hits all alike;
# compare the turns' ratios, not single runs. spry bench's own process (the
# load generator) is pinned to CPU 1; every process it starts (node,
# instances) is moved back to CPUs 0-1 as soon as it appears. Used for the
# ownership protocol's cost (issue 17, BENCHMARKS.md).
#
#   bench/before-after.sh OUT TURNS BIN_A BIN_B ... -- BENCH-ARGS...
#   e.g. (binaries built with go build -o DIR/ ./cmd/spry at each commit):
#   bench/before-after.sh /tmp/ba 6 /tmp/old/spry /tmp/new/spry -- \
#       hello -c 8 --modes skmsg,uds,adaptive,poll --duration 6s --warmup 1s
#
# Writes OUT/N-TURN/report.json (N: the binary's place in the list) and
# OUT/N-TURN.log.
set -uo pipefail
out=$1 turns=$2
shift 2
bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do bins+=("$(realpath "$1")"); shift; done
shift
mkdir -p "$out"
declare -A seen
repin() { # every new descendant of $1 onto CPUs 0-1 (twice: threads it made meanwhile)
	local c
	for c in $(pgrep -P "$1"); do
		if [ "${seen[$c]:-0}" -lt 2 ]; then
			taskset -a -p -c 0,1 "$c" >/dev/null 2>&1
			seen[$c]=$((${seen[$c]:-0} + 1))
		fi
		repin "$c"
	done
}
for t in $(seq 1 "$turns"); do
	for i in "${!bins[@]}"; do
		d=$out/$i-$t
		taskset -c 1 "${bins[$i]}" bench "$@" --out "$d" >"$d.log" 2>&1 &
		bp=$!
		trap 'kill $bp 2>/dev/null' EXIT
		while kill -0 $bp 2>/dev/null; do
			repin $bp
			sleep 0.1
		done
		wait $bp
		echo "turn $t: ${bins[$i]}: exit $? ($(date -u +%T))"
	done
done
