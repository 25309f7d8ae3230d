#!/bin/bash
# Memory per idle instance (issue 16): the cold-start probe
# (bench/startprobe/fn) as N go: processes, each having served requests,
# then idle; an instance costs its proportional set size (Pss: its own pages
# plus its share of the executable's and libraries'). Then the same package
# as wasm: instances in the app's sandbox host: an instance costs what the
# host's Pss grows by from 1 instance to N, per instance (the host's own
# cost, with the compiled module and the snapshot, is paid once per app;
# its Go heap is not collected first: BenchmarkDensity in
# internal/runtime/wasm is the clean per-instance cost, measured after a
# garbage collection).
#
#   bench/density.sh SPRY_BINARY [N]     # run in a checkout of spry; N=100 (>1)
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

up wasm 1
host1=$(pss "$(pids)")
down
up wasm "$n"
host=$(pss "$(pids)")
down
wasm=$(((host - host1) / (n - 1)))

printf 'go: process        %8d KiB per idle instance  %6d per GiB\n' $((proc / 1024)) $(((1 << 30) / proc))
printf 'wasm: sandbox host %8d KiB per idle instance  %6d per GiB  (host Pss: %d KiB with 1 instance, %d KiB with %d)\n' \
  $((wasm / 1024)) $(((1 << 30) / wasm)) $((host1 / 1024)) $((host / 1024)) "$n"
