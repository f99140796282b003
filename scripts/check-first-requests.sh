#!/usr/bin/env bash
# Test: start `paygate serve` on free ports with a fresh data dir, run
# scripts/first-requests.sh against it and stop it with SIGTERM (it must exit 0); then
# the same with the block scripts/run.sh prints for a new user to copy and paste, run
# as printed, against another fresh server. Each must show the shop's balance of 1250
# and the order paid from the wallet; the last line says both did.
set -euo pipefail
paygate=$1; data=$2
here=$(dirname "$0")

round() {  # round <data dir> <command...>
  local data=$1; shift
  rm -rf "$data"; mkdir -p "$data"
  # Port 0: the kernel picks a free one (a random fixed port could be taken by another
  # test running at the same time); the server logs the one it got.
  "$paygate" serve --data-dir "$data" --http "127.0.0.1:0" --binary "" > "$data.log" 2>&1 &
  pid=$!
  trap 'kill -9 $pid 2>/dev/null || true' EXIT
  local port=
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
  PAYGATE_URL="http://127.0.0.1:$port" PAYGATE_DATA_DIR="$data" "$@" | tee "$data.out"
  grep -q '"balance":1250' "$data.out" || { echo "no balance of 1250 in the answers" >&2; exit 1; }
  grep -q '"status":"success","merchant"' "$data.out" || { echo "no paid order in the answers" >&2; exit 1; }
  grep -q '"object":"list","data":\[{"id":"ord_' "$data.out" || { echo "no list of orders in the answers" >&2; exit 1; }
  kill -TERM $pid
  wait $pid
  echo "server exited $?"
  trap - EXIT
}

round "$data" "$here/first-requests.sh"
printed=$("$here/run.sh" --print-first-requests)
round "$data-printed" bash -euo pipefail -c "$printed"
echo "first requests ok: the script and the printed block"
