#!/usr/bin/env bash
# Builds paygate and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target paygate -j "$(nproc)"
exec ./build/src/app/paygate demo "$@"
