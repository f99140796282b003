#!/usr/bin/env bash
# The test command: installs what is needed, builds, and runs every test.
#   1. g++, optimised (RelWithDebInfo, assertions on): every test, including the
#      randomized model test at full size.
#   2. clang, ASan + UBSan: every test again, the model test at a smaller size; then
#      each fuzz target (libFuzzer) for PAYGATE_FUZZ_SECONDS (default 20) from its seeds.
#   3. clang, TSan: the threaded modules (journal, snapshot, pipeline, crash test, and
#      the gateway end to end).
#   4. g++ Release (-O3): everything builds (users build so; warnings differ by level).
# Every build here uses -Wall -Wextra -Werror (PAYGATE_WERROR=ON; off by default for
# users, whose newer compilers may warn about more).
# Each stage's duration is printed as it ends, and all of them at the end.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --fast     the g++ stage only
#   scripts/stress.sh          either of these with every core kept busy (docs/TESTING.md)
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
[ "${1:-}" = "--fast" ] && fast=1
jobs=$(nproc)

stage_name=""
stage_started=0
durations=""
stage_end() {
  if [ -n "$stage_name" ]; then
    local took=$((SECONDS - stage_started))
    printf '=== %s: %d s ===\n' "$stage_name" "$took"
    durations+="$(printf '  %-34s %5d s' "$stage_name" "$took")"$'\n'
  fi
}
stage() {
  stage_end
  stage_name="$*"
  stage_started=$SECONDS
  printf '\n=== %s ===\n' "$*"
}
summary() {
  stage_end
  stage_name=""
  printf '\ntest.sh: stage durations\n%s  %-34s %5d s\n' "$durations" "total" "$SECONDS"
  if [ "$use_ccache" = 1 ]; then
    echo "test.sh: ccache: $(ccache --print-stats | awk -F'\t' '/^(direct_cache_hit|preprocessed_cache_hit|cache_miss)\t/ {printf "%s=%s ", $1, $2}')"
  fi
}

stage "install dependencies"
./scripts/install-deps.sh

# ccache (installed above) keeps compiled objects between runs of this command, so a
# fresh clone on a machine that built the same sources before compiles only what
# changed; the objects are the compiler's own, byte for byte. PAYGATE_CCACHE=0 turns
# it off; its cache is ccache's default (~/.cache/ccache) unless CCACHE_DIR says.
# Paths are taken relative to the clone and its directory is not hashed, so clones in
# other directories share the cache (the debug information of a cached object names
# the clone that compiled it first: these builds are for tests, not for gdb).
use_ccache=0
launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=)  # cleared, in case a build directory had it
if [ "${PAYGATE_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null 2>&1; then
  use_ccache=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-20G} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  ccache --zero-stats >/dev/null
fi

# One MariaDB server for every test of the history store in MariaDB (each test makes a
# database of its own), rather than one per test process: ctest runs each test alone,
# and a server takes seconds to start. Stopped when this script ends, however it ends.
mariadb_dir=$(mktemp -d /tmp/paygate-test-mariadb.XXXXXX)
trap 'bash scripts/mariadb-for-tests.sh stop "$mariadb_dir"; rm -rf "$mariadb_dir"' EXIT
PAYGATE_TEST_MARIADB_PORT=$(bash scripts/mariadb-for-tests.sh start "$mariadb_dir")
export PAYGATE_TEST_MARIADB_PORT

stage "g++ build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=g++ \
  -DPAYGATE_WERROR=ON "${launcher[@]}" >/dev/null
cmake --build build -j "$jobs"
stage "g++ tests"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900

if [ "$fast" = 1 ]; then
  summary
  echo "test.sh: fast mode, sanitizer and Release stages skipped"
  exit 0
fi

stage "clang ASan+UBSan build"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DPAYGATE_WERROR=ON -DPAYGATE_SANITIZE=address,undefined -DPAYGATE_FUZZ=ON "${launcher[@]}" >/dev/null
cmake --build build-asan -j "$jobs"
stage "clang ASan+UBSan tests"
PAYGATE_MODEL_COMMANDS=200000 PAYGATE_SIM_SEEDS=50 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" --timeout 900 -LE bench

stage "fuzzing (libFuzzer, ASan+UBSan), ${PAYGATE_FUZZ_SECONDS:-20} s per target"
for entry in api/http_request_fuzz:api/fuzz_corpus/http api/binary_protocol_fuzz:api/fuzz_corpus/binary \
  journal/command_packing_fuzz:journal/fuzz_corpus; do
  target=${entry%%:*}
  seeds=src/${entry#*:}
  work=$(mktemp -d)  # new inputs and any crash go here, not into the checked-in seeds
  mkdir "$work/corpus"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "./build-asan/src/$target" -max_total_time="${PAYGATE_FUZZ_SECONDS:-20}" \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" "$seeds" >"$work/log" 2>&1; then
    tail -60 "$work/log"
    echo "test.sh: $target found a failure; the input is in $work"
    exit 1
  fi
  echo "$target: $(grep -E '^Done' "$work/log")"
  rm -rf "$work"
done

stage "clang TSan build (the threaded modules)"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DPAYGATE_WERROR=ON -DPAYGATE_SANITIZE=thread "${launcher[@]}" >/dev/null
cmake --build build-tsan -j "$jobs" --target pipeline_test journal_test snapshot_test crash_test \
  crash_harness paygate api_server_test
stage "clang TSan tests"
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
./build-tsan/src/journal/journal_test --gtest_brief=1
./build-tsan/src/snapshot/snapshot_test --gtest_brief=1
./build-tsan/src/pipeline/pipeline_test --gtest_brief=1
PAYGATE_CRASH_CYCLES=6 ./build-tsan/src/pipeline/crash_test --gtest_brief=1
./build-tsan/src/api/api_server_test --gtest_brief=1
unset TSAN_OPTIONS

stage "g++ Release build (-O3)"
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
  -DPAYGATE_WERROR=ON "${launcher[@]}" >/dev/null
cmake --build build-release -j "$jobs"

summary
echo
echo "test.sh: all tests passed"
