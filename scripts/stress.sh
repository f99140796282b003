#!/usr/bin/env bash
# Runs a command — by default the whole test command, scripts/test.sh — while every
# core is kept busy, the way a shared CI machine is: a test that passes only on an
# idle machine fails here (docs/TESTING.md).
#
#   scripts/stress.sh                      scripts/test.sh under contention
#   scripts/stress.sh scripts/test.sh --fast
#   PAYGATE_STRESS_LOOPS=4 scripts/stress.sh ...   busy loops (default: one per core)
#
# The busy loops are plain shell loops at normal priority, each bounded by
# PAYGATE_STRESS_MAX_S (default 4 hours) and stopped when the command ends, however
# it ends. The command's exit status is this script's.
set -euo pipefail
cd "$(dirname "$0")/.."

loops=${PAYGATE_STRESS_LOOPS:-$(nproc)}
max_s=${PAYGATE_STRESS_MAX_S:-14400}
[ $# -eq 0 ] && set -- ./scripts/test.sh

pids=()
stop_loops() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_loops EXIT INT TERM

for _ in $(seq "$loops"); do
  timeout "$max_s" bash -c 'while :; do :; done' &
  pids+=($!)
done
echo "stress: $loops busy loops (pids ${pids[*]}), up to ${max_s} s; running: $*"
started=$SECONDS
status=0
"$@" || status=$?
echo "stress: '$*' exited $status after $((SECONDS - started)) s with $loops busy loops"
exit "$status"
