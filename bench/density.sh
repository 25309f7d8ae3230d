#!/bin/bash
# Memory per idle instance of a process kind (issue 16): the cold-start
# probe (bench/startprobe/fn) as N go: processes, each having served
# requests, then idle; an instance costs its proportional set size (Pss: its
# own pages plus its share of the executable's and libraries'). For
# comparison, the sandbox host's Pss with the same function as N wasm:
# instances — which includes the compiled module, the snapshot and whatever
# garbage the host's Go heap has not returned yet; the clean per-instance
# cost of a wasm instance is BenchmarkDensity (internal/runtime/wasm), which
# collects garbage before it measures.
#
#   bench/density.sh SPRY_BINARY [N]     # run in a checkout of spry; N=100
set -euo pipefail
spry=$(realpath "$1"); n=${2:-100}
src=$(realpath bench/startprobe/fn)
dir=$(mktemp -d); chmod 755 "$dir"
node=
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT

pss() { awk '/^Pss:/ {print $2 * 1024}' "/proc/$1/smaps_rollup"; }

# up KIND COUNT: a node serving COUNT instances of the probe as KIND.
up() {
  cat > "$dir/spry.yaml" <<Y
app: density
pool: {buffers: 64, bufferSize: 16KiB}
functions:
  probe: {$1: $src, instances: $2}
chains:
  probe: {route: /probe, steps: [probe], methods: [POST]}
Y
  "$spry" up --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$dir/data" \
    --cache-dir "${TMPDIR:-/tmp}/spry-bench-cache" -f "$dir/spry.yaml" > "$dir/node.log" 2>&1 &
  node=$!
  for _ in $(seq 600); do grep -q 'spry is up' "$dir/node.log" && break; sleep 0.2; done
  http=$(sed -n 's/.*spry is up" http=\([^ ]*\) admin=\([^ ]*\).*/\1/p' "$dir/node.log")
  admin=$(sed -n 's/.*spry is up" http=\([^ ]*\) admin=\([^ ]*\).*/\2/p' "$dir/node.log")
  # Every instance serves a few requests (ties rotate over them), then idles.
  for _ in $(seq $((3 * $2))); do curl -s -o /dev/null -X POST "$http/probe" -d x; done
  sleep 2
}
down() { kill "$node"; wait "$node" 2>/dev/null || true; }
pids() { curl -s "$admin/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(sorted({str(i["pid"]) for a in s["apps"] for f in a["functions"] for i in f["instances"] if i["pid"]})))'; }

up go "$n"
total=0; for p in $(pids); do total=$((total + $(pss "$p"))); done
proc=$((total / n))
down

up wasm "$n"
host=$(pss "$(pids)")
down

printf 'go: process        %8d KiB per idle instance  %6d per GiB\n' $((proc / 1024)) $(((1 << 30) / proc))
printf 'wasm: the sandbox host with %d instances: %d KiB Pss in all\n' "$n" $((host / 1024))
