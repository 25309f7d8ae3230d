#!/bin/bash
# ABBA-interleaved runs of BenchmarkRequest/exact and /recorder
for i in $(seq 8); do
  if [ $((i%2)) = 1 ]; then order="exact recorder"; else order="recorder exact"; fi
  for n in $order; do /tmp/s11/gw.test -test.run '^$' -test.bench "BenchmarkRequest/$n\$" -test.count 1 -test.benchtime 1s | grep ^Benchmark; done
done
