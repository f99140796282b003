#!/usr/bin/env bash
# Installs every Debian 12 package that paygate's build, tests and benchmarks need.
# Idempotent: already-installed packages are left as they are. Runs as root, or
# through sudo when it is available.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git g++ clang clang-format
  libclang-rt-14-dev llvm ccache
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # libraries
  libfmt-dev libspdlog-dev libsimdjson-dev libboost-dev libssl-dev
  libcli11-dev libtomlplusplus-dev libjwt-dev librdkafka-dev libsqlite3-dev
  libmariadb-dev libhiredis-dev
  # tools the tests call
  curl procps python3 python3-yaml openssl ca-certificates
  # bench/compare: the systems paygate is compared with (its quick run is a test);
  # MariaDB also holds the history store in its tests (scripts/mariadb-for-tests.sh)
  postgresql-15 libpq-dev mariadb-server mariadb-client redis-server gnuplot-nox
  # bench/many_connections: HTTP load at many connections (its quick run is a test)
  wrk
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "install-deps: must run as root or with sudo available" >&2; exit 1
  fi
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
