#!/usr/bin/env bash
# Test: start `paygate serve` on free ports with a fresh data dir, run
# scripts/first-requests.sh against it, stop it with SIGTERM (it must exit 0).
set -euo pipefail
paygate=$1; data=$2
rm -rf "$data"; mkdir -p "$data"
port=$(( 20000 + RANDOM % 20000 ))
"$paygate" serve --data-dir "$data" --http "127.0.0.1:$port" --binary "" > "$data.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
PAYGATE_URL="http://127.0.0.1:$port" PAYGATE_DATA_DIR="$data" "$(dirname "$0")/first-requests.sh"
kill -TERM $pid
wait $pid
echo "server exited $?"
