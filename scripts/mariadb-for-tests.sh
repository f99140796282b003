#!/usr/bin/env bash
# A real MariaDB server for the tests and benchmarks (docs/TESTING.md), on 127.0.0.1 only.
#   scripts/mariadb-for-tests.sh start DIR [PORT]
#       starts one, on PORT or a free port, with a fresh data directory; prints the port
#       (also in DIR/port; the socket's path is in DIR/socket). It has a database
#       `paygate` and a user paygate@127.0.0.1 (no password) who may do anything (the
#       tests make a database each).
#   scripts/mariadb-for-tests.sh stop DIR    stops the one started in DIR, removes its data
# Extra mariadbd options: the MARIADB_OPTIONS variable (word-split). Commits are flushed
# to disk (innodb_flush_log_at_trx_commit=1, paygate's history store refuses less).
# As root, the server runs as the package's user `mysql`, so its data directory is made
# under /var/tmp (on disk, where that user may reach), not in DIR.
set -euo pipefail

command=${1:?start or stop}
dir=${2:?the server\'s directory}
wanted_port=${3:-}

case "$command" in
start)
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] ||
    { echo "mariadbd is not installed (scripts/install-deps.sh)" >&2; exit 2; }
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$dir"
  data=$(mktemp -d /var/tmp/paygate-mariadb.XXXXXX)
  chmod 755 "$data"
  echo "$data" >"$dir/datadir"
  user=()
  if [ "$(id -u)" -eq 0 ]; then chown mysql: "$data"; user=(--user=mysql); fi
  mariadb-install-db --no-defaults --datadir="$data" "${user[@]}" \
    --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 ||
    { echo "mariadb-install-db failed (see $dir/install.log)" >&2; cat "$dir/install.log" >&2; exit 1; }
  # shellcheck disable=SC2206
  extra=(${MARIADB_OPTIONS:-})
  for attempt in 1 2 3 4 5; do
    # A free port, as the kernel hands one out; another process could take it before
    # the server does, hence the attempts.
    port=$wanted_port
    [ -n "$port" ] || port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mariadbd --no-defaults --datadir="$data" "${user[@]}" --port="$port" \
      --bind-address=127.0.0.1 --socket="$data/mariadb.sock" --skip-name-resolve \
      --innodb-flush-log-at-trx-commit=1 --skip-log-bin "${extra[@]}" >"$dir/mariadb.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do  # 60 s at most: a busy machine starts it slowly
      if mariadb -uroot -S "$data/mariadb.sock" -e 'SELECT 1' >/dev/null 2>&1; then
        mariadb -uroot -S "$data/mariadb.sock" -e \
          "CREATE DATABASE IF NOT EXISTS paygate; CREATE USER IF NOT EXISTS paygate@'127.0.0.1';
           GRANT ALL ON *.* TO paygate@'127.0.0.1';"
        echo "$pid" >"$dir/pid"
        echo "$port" >"$dir/port"
        echo "$data/mariadb.sock" >"$dir/socket"
        echo "$port"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break  # it exited: the port was taken
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "mariadbd did not start (see $dir/mariadb.log)" >&2
  tail -n 30 "$dir/mariadb.log" >&2 || true
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  if [ -f "$dir/datadir" ]; then
    data=$(cat "$dir/datadir")
    case "$data" in /var/tmp/paygate-mariadb.*) rm -rf "$data" ;; esac
    rm -f "$dir/datadir"
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR [PORT]" >&2
  exit 2
  ;;
esac
