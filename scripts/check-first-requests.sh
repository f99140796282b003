#!/usr/bin/env bash
# Test: start `paygate serve` on free ports with a fresh data dir, run
# scripts/first-requests.sh against it, stop it with SIGTERM (it must exit 0).
set -euo pipefail
paygate=$1; data=$2
rm -rf "$data"; mkdir -p "$data"
# Port 0: the kernel picks a free one (a random fixed port could be taken by another
# test running at the same time); the server logs the one it got.
"$paygate" serve --data-dir "$data" --http "127.0.0.1:0" --binary "" > "$data.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
port=
# Start-up zeroes the ledger's memory: seconds on a busy machine. Bounded at 120 s.
for _ in $(seq 1 1200); do
  if ! kill -0 $pid 2>/dev/null; then
    echo "paygate exited before it was ready:" >&2
    cat "$data.log" >&2
    exit 1
  fi
  [ -z "$port" ] && port=$(grep -o 'event=listening http=127.0.0.1:[0-9]*' "$data.log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ -z "$port" ] || ! curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
  echo "paygate was not ready after 120 s:" >&2
  cat "$data.log" >&2
  exit 1
fi
PAYGATE_URL="http://127.0.0.1:$port" PAYGATE_DATA_DIR="$data" "$(dirname "$0")/first-requests.sh"
kill -TERM $pid
wait $pid
echo "server exited $?"
