#!/bin/bash
# Issue 12's measurements, one `spry bench` run per point (every ratio is
# between modes of the same run):
#   payload sweep 64 B → 256 MiB through a 3-step chain, skmsg vs http:
#     -c1 (latency) and -c4 (throughput; -c2 at 256 MiB); the 64 KiB point
#     again with the load generator on CPU 1 and the processes under test
#     on CPU 0 (taskset);
#   fan-out to 8 branches + join vs the same 8 steps as a line vs http's
#     parallel calls;
#   Online Boutique home and checkout, call/return vs linear vs knative, grpc.
# The hop's own cost, apart from the machine's scheduling:
#   go test ./sdk -run X -bench ChainPayload -benchtime 10000x -count 6
#
#   bench/payload-sweep.sh SPRY_BINARY OUTDIR
set -euo pipefail
spry=$(realpath "$1"); out=$2
mkdir -p "$out"
b() { name=$1; shift; "$spry" bench "$@" --out "$out/$name" 2>&1 | grep -v '^bench: round'; }
pinned() { name=$1; shift; taskset -c 1 "$spry" bench "$@" --system-cpus 0 --out "$out/$name" 2>&1 | grep -v '^bench: round'; }
for p in 64B 64KiB 1MiB 16MiB 64MiB 256MiB; do
  d=6s; [ "$p" = 64MiB ] || [ "$p" = 256MiB ] && d=12s
  b "payload-$p-c1" chain --steps 3 --payload "$p" --modes skmsg,http -c 1 --duration $d --rounds 2 --warmup 1s
  c=4; [ "$p" = 256MiB ] && c=2
  b "payload-$p-c$c" chain --steps 3 --payload "$p" --modes skmsg,http -c $c --duration $d --rounds 2 --warmup 1s
done
pinned payload-64KiB-pinned chain --steps 3 --payload 64KiB --modes skmsg,http -c 4 --duration 10s --rounds 2
b fanout8 fanout --branches 8 --cpu 200us --modes skmsg,skmsg+seq,http -c 8 --duration 12s --rounds 2
b fanout8-nocpu fanout --branches 8 --modes skmsg,skmsg+seq,http -c 8 --duration 12s --rounds 2
b boutique-calls boutique --chains home,checkout --modes skmsg,skmsg+calls,knative,grpc -c 8 --duration 16s --rounds 2
