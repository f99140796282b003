// Snapshots: the ledger's whole state at a sequence, in one CRC-checked file.
//
//   snapshot-<sequence, 20 digits>.snap   (sequence = the last command it includes)
//
//   offset  size  field
//   0       64    SnapshotHeader: magic "PGSNAPSH", version, region, group, sequence,
//                 timestamp, state_bytes
//   64      n     the ledger's state, as Ledger::save() writes it (docs/SNAPSHOT.md)
//   64+n    16    SnapshotTrailer: CRC-32C of the header, CRC-32C of the state, magic
//
// Taking one (Snapshotter): the group thread forks; the child writes the file from its
// copy-on-write image of memory, at low priority, with no allocation, and exits. The
// group thread is paused only for fork() itself. The file is written as a .tmp (named
// with the server's pid) and renamed into place only when the journal is durable up
// to its sequence, so a snapshot never holds a command that was not acknowledged.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/fixed_array.h"
#include "base/histogram.h"
#include "base/storage.h"
#include "ledger/ledger.h"

namespace paygate::snapshot {

inline constexpr u64 kMagic = tag8("PGSNAPSH");
inline constexpr u64 kEndMagic = tag8("PGSNPEND");
inline constexpr u32 kVersion = 1;

struct SnapshotHeader {
  u64 magic;
  u32 version;
  u32 region;
  u32 group;
  u32 reserved0;
  u64 sequence;
  u64 timestamp_ns;
  u64 state_bytes;
  u64 reserved1[2];
};
static_assert(sizeof(SnapshotHeader) == 64);

struct SnapshotTrailer {
  u32 header_crc;
  u32 state_crc;
  u64 magic;
};
static_assert(sizeof(SnapshotTrailer) == 16);

std::string file_name(u64 sequence);
u64 parse_file_name(std::string_view name) noexcept;  // 0 if not a snapshot's name

// Snapshots in dir, newest first.
std::vector<std::pair<u64, std::filesystem::path>> list(const std::filesystem::path& dir);

// Writes `ledger` to `path` and fsyncs it. Allocates nothing, so it may run in a
// forked child. Returns 0 or an errno.
int write_file(const Ledger& ledger, const char* path, unsigned char* buffer,
               std::size_t buffer_bytes, Storage& storage = Storage::posix()) noexcept;

struct LoadResult {
  std::unique_ptr<Ledger> ledger;  // null: no usable snapshot (start from empty)
  u64 sequence = 0;
  std::filesystem::path file;
  std::vector<std::string> skipped;  // snapshots that failed, newest first, with why
};
// Loads the newest snapshot in dir that checks out into a ledger from make_ledger(),
// trying older ones when one fails.
// `at_most`: only snapshots at or before that sequence (a follower that must not get
// ahead of what it has projected).
LoadResult load_newest(const std::filesystem::path& dir,
                       const std::function<std::unique_ptr<Ledger>()>& make_ledger,
                       u64 at_most = ~u64{0});

// Keeps the newest `keep` snapshots and deletes the rest (and stray .tmp files).
// Returns the oldest kept snapshot's sequence, or 0 if none.
// keep_at_or_before (not 0): the newest snapshot at or before that sequence is kept as
// well (a reader of the journal behind the newest snapshots resumes from it).
u64 prune(const std::filesystem::path& dir, u32 keep, Storage& storage = Storage::posix(),
          u64 keep_at_or_before = 0);

// Takes snapshots in a forked child, one at a time. Group thread only.
//
// in_process (the simulator, which runs everything in one thread on its own storage):
// start() writes the file itself, at once, through `storage`; poll() then publishes
// it under the same rule.
class Snapshotter {
 public:
  explicit Snapshotter(std::filesystem::path dir, std::size_t buffer_bytes = 1u << 20,
                       Storage* storage = nullptr, bool in_process = false);
  ~Snapshotter();

  bool running() const noexcept { return child_ > 0; }
  // Forks a child that writes the ledger as it is now. False if one is already
  // running or fork() failed.
  bool start(const Ledger& ledger);

  enum class Progress { idle, running, published, failed };
  // Reaps the child if it is done; publishes its file once durable_sequence has
  // reached the snapshot's sequence. `message` says what happened on published/failed.
  Progress poll(u64 durable_sequence, std::string* message);

  u64 last_published() const noexcept { return last_published_; }
  u64 pending_sequence() const noexcept { return sequence_; }
  const Histogram& pause_ns() const noexcept { return pause_ns_; }  // fork() time
  u64 last_pause_ns() const noexcept { return last_pause_ns_; }
  const Histogram& duration_ns() const noexcept { return duration_ns_; }  // fork to written

 private:
  static constexpr pid_t kInProcessChild = 1;  // running() while written in process

  std::filesystem::path dir_;
  FixedArray<unsigned char> buffer_;  // the child's write buffer, allocated here
  Storage* storage_;
  bool in_process_;
  int in_process_error_ = 0;
  pid_t child_ = 0;
  bool written_ = false;
  u64 sequence_ = 0;
  u64 started_ns_ = 0;
  u64 last_pause_ns_ = 0;
  std::string tmp_path_;
  u64 last_published_ = 0;
  Histogram pause_ns_;
  Histogram duration_ns_;
};

}  // namespace paygate::snapshot
