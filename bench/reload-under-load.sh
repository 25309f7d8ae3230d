#!/bin/bash
# Reload under load (issue 18): wrk -c64 POSTs to a two-step chain while
# `spry reload` swaps the app every 2 s (the config alternates upper/echo, so
# each reload starts a new app and drains the old one). Prints wrk's summary:
# "Non-2xx" or "Socket errors" lines mean failed requests (the goal is none).
#
#   bench/reload-under-load.sh SPRY_BINARY [1|0]   # 0: the same load, no reloads
set -euo pipefail
spry=$(realpath "$1"); reloads=${2:-1}
dir=$(mktemp -d); cd "$dir"
trap 'kill $node 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > v1.yaml <<'Y'
app: live
functions:
  f: {builtin: upper}
  g: {builtin: reverse}
chains:
  c: {route: /live, steps: [f, g]}
Y
sed 's/builtin: upper/builtin: echo/' v1.yaml > v2.yaml
printf 'wrk.method = "POST"\nwrk.body = "spry"\n' > post.lua
cp v1.yaml live.yaml
"$spry" up --listen 127.0.0.1:18080 --admin 127.0.0.1:18081 -f live.yaml > node.log 2>&1 &
node=$!
for _ in $(seq 50); do curl -s -o /dev/null -X POST 127.0.0.1:18080/live -d x && break; sleep 0.2; done
taskset -c 1 wrk -t2 -c64 -d20s --latency -s post.lua http://127.0.0.1:18080/live > wrk.out 2>&1 &
w=$!
n=0
if [ "$reloads" = 1 ]; then
  sleep 1
  for i in $(seq 9); do
    if [ $((i % 2)) = 1 ]; then cp v2.yaml live.yaml; else cp v1.yaml live.yaml; fi
    "$spry" reload --admin 127.0.0.1:18081 && n=$((n + 1))
    sleep 2
  done
fi
wait $w
kill -TERM $node; wait $node || true
echo "reloads: $n"
cat wrk.out
