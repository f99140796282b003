#!/usr/bin/env bash
# A real redis-server for the tests (docs/TESTING.md), on 127.0.0.1 only.
#   scripts/redis-for-tests.sh start DIR [PORT]
#                                          starts one with its files in DIR, on PORT or
#                                          a free port; prints the port (also in DIR/port)
#   scripts/redis-for-tests.sh stop DIR    stops the one started in DIR
# No persistence (the tests' data is thrown away); started in the background, it is
# waited for (bounded) until it answers PING.
set -euo pipefail

command=${1:?start or stop}
dir=${2:?the server\'s directory}
wanted_port=${3:-}

case "$command" in
start)
  command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/install-deps.sh)" >&2; exit 2; }
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    # A free port, as the kernel hands one out; another process could take it before
    # redis does, hence the attempts.
    port=$wanted_port
    [ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
      --daemonize no --protected-mode yes --loglevel warning >"$dir/redis.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do  # 30 s at most: a busy machine starts it slowly
      if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
        echo "$pid" >"$dir/pid"
        echo "$port" >"$dir/port"
        echo "$port"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break  # it exited: the port was taken
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "redis-server did not start (see $dir/redis.log)" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
  ;;
stop)
  [ -f "$dir/pid" ] || exit 0
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
