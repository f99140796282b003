#!/usr/bin/env bash
# Builds paygate and runs the gateway on its embedded defaults: HTTP on
# 127.0.0.1:8080, the binary protocol on 127.0.0.1:8081, data in ./paygate-data.
# Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target paygate -j "$(nproc)"
cat <<'TEXT'

paygate is starting. In another shell, from this directory, try a first request
(or run ./scripts/first-requests.sh, which holds the same lines):

TEXT
sed -n '/^H=/,$p' scripts/first-requests.sh | sed 's/^/  /'
echo
exec ./build/src/app/paygate serve "$@"
