#!/usr/bin/env bash
# Does the simulator catch the bugs it exists for? Builds it from a copy of this tree,
# checks that the unchanged copy passes, then breaks one durability rule at a time
# (each a small edit of the source, below) and expects the simulator to fail. Prints a
# line per mutation: caught (with the seed and the check that failed) or MISSED.
#
#   scripts/sim-mutations.sh            200 seeds per mutation
#   SEEDS=1000 scripts/sim-mutations.sh
#
# Exit status 1 if any mutation is missed. docs/SIMULATION.md quotes its output.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${SEEDS:-200}"
work="$(mktemp -d "${TMPDIR:-/tmp}/paygate-mutations-XXXXXX")"
trap 'rm -rf "$work"' EXIT
git ls-files -co --exclude-standard -z | grep -zv '^build' | xargs -0 cp --parents -t "$work"
cd "$work"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
build() { cmake --build build -j "${JOBS:-2}" --target simulator >/dev/null; }

# mutate FILE OLD NEW: replaces the one occurrence of OLD in FILE (fails if not found
# exactly once, so a mutation can never silently stop applying).
mutate() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"mutation anchor found {text.count(old)} times in {path}: {old!r}")
open(path, "w").write(text.replace(old, new))
PY
}

echo "building the simulator (unchanged) ..."
build
if ! ./build/src/sim/simulator --seeds "$seeds" >/tmp/paygate-mutation-baseline.txt; then
  tail -3 /tmp/paygate-mutation-baseline.txt
  echo "the unchanged simulator fails: fix that first"
  exit 1
fi
echo "unchanged: $(tail -1 /tmp/paygate-mutation-baseline.txt)"

missed=0
try() {
  local name="$1" file="$2" old="$3" new="$4"
  cp "$file" "$file.orig"
  mutate "$file" "$old" "$new"
  build
  local out
  if out="$(./build/src/sim/simulator --seeds "$seeds" 2>&1)"; then
    echo "MISSED  $name"
    missed=1
  else
    echo "caught  $name: $(grep -m1 'FAILED' <<<"$out" || tail -1 <<<"$out")"
  fi
  mv "$file.orig" "$file"
  touch "$file"  # newer than the mutated build, so the next build takes it back
}

try "acknowledge before fdatasync" src/journal/writer.cc \
  '  const int injected = fault(FileOp::sync);' \
  '  if (last_sequence != 0) durable_sequence_.store(last_sequence, std::memory_order_release);
  const int injected = fault(FileOp::sync);'
try "new segment's directory entry not synced" src/journal/writer.cc \
  'storage().fsync(fd) != 0 || storage().fsync(dir_fd_) != 0' \
  'storage().fsync(fd) != 0'
try "record checksum not checked" src/journal/reader.cc \
  'if (crc != header.crc)' 'if (false && crc != header.crc)'
try "torn tail not cleared at start" src/pipeline/group_recovery.cc \
  'if (!torn_file_deleted) {' 'if (false) {'
try "a damaged complete last record taken for a torn one" src/journal/reader.cc \
  '  if (trailer_in_place(file, offset)) return false;' ''
try "snapshot published before what it holds is durable" src/snapshot/snapshot.cc \
  '  if (durable_sequence < sequence_) return Progress::running;  // not yet acknowledged
  // Published only once every command it holds is durable in the journal: a snapshot
  // never holds what a crash could take back.
  PG_ASSERT(written_ && durable_sequence >= sequence_);' '  PG_ASSERT(written_);'
try "snapshot file not synced before it is published" src/snapshot/snapshot.cc \
  '!storage.pwrite_all(fd, &header, sizeof header, 0) || storage.fsync(fd) != 0' \
  '!storage.pwrite_all(fd, &header, sizeof header, 0)'
exit "$missed"
