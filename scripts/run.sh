#!/usr/bin/env bash
# Builds paygate and runs the gateway on its embedded defaults: HTTP on
# 127.0.0.1:8080, the binary protocol on 127.0.0.1:8081, data in ./paygate-data.
# Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
#
#   scripts/run.sh --print-first-requests   only print the copy-paste block (its test
#                                           runs exactly that text)
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole block of scripts/first-requests.sh after its shebang and comments: from
# the line that sets URL and DATA on.
first_requests() { sed -n '/^URL=/,$p' scripts/first-requests.sh | sed 's/^/  /'; }
if [ "${1:-}" = "--print-first-requests" ]; then
  first_requests
  exit 0
fi
./scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target paygate -j "$(nproc)"
cat <<'TEXT'

paygate is starting. In another shell, from this directory, try a first request
(or run ./scripts/first-requests.sh, which holds the same lines):

TEXT
first_requests
echo
exec ./build/src/app/paygate serve "$@"
