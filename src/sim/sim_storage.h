// The simulator's disk: real files in a directory, plus what a crash would leave of
// them.
//
// Every change the group makes goes through Storage (base/storage.h); this one does
// it on the real files, so that reads (which need no seam) see what a running
// system's page cache would show, and remembers, per file, the content its last sync
// made durable and the writes since; per directory, the entries its last fsync made
// durable and the changes since. crash() then puts on the real disk what a power
// cut could leave: the durable state, plus a prefix of what came after it — a prefix
// of the directory changes since the last directory fsync (a journaling file system
// commits them in order), and of each file's writes since its last sync, the last of
// them perhaps torn at a sector boundary (a torn write leaves true bytes, then what
// was there before). Optionally a bit flipped in those never-synced bytes.
//
// Faults: a pwrite or a sync can fail (EIO, ENOSPC) at a seeded rate, and the disk
// can be set to die after its next N changes (every change after that fails, as in a
// process killed mid-flush): the caller then crashes it. Everything is decided by the
// seeded generator, in the order calls arrive, so one seed gives one run.
//
// One thread only (the simulator's).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/storage.h"
#include "base/types.h"

namespace paygate::sim {

inline constexpr u64 kSectorBytes = 512;

class SimStorage final : public Storage {
 public:
  explicit SimStorage(u64 seed) : random_(seed) {}

  struct Faults {
    u32 write_error_per_million = 0;  // a pwrite fails, EIO or ENOSPC, writing nothing
    u32 sync_error_per_million = 0;   // an fdatasync or fsync fails with EIO
  };
  void set_faults(const Faults& faults) noexcept { faults_ = faults; }
  // After `changes` more changes (writes, syncs, creates, removes, renames) succeed,
  // every later one fails with EIO and changes nothing: the process died there.
  void die_after(u64 changes) noexcept { dies_after_ = changes_ + changes; }
  bool dead() const noexcept { return dead_; }
  // Forgets a death set by die_after() that has not come yet.
  void live_on() noexcept {
    if (!dead_) dies_after_ = ~u64{0};
  }

  struct CrashOptions {
    u32 flip_unsynced_per_million = 0;  // a bit flipped in what survives of unsynced writes
  };
  struct CrashReport {
    u64 files = 0;              // files the crash left
    u64 unsynced_writes = 0;    // writes that were not synced
    u64 surviving_writes = 0;   // ... of which this many reached the disk (one maybe torn)
    u64 torn_writes = 0;        // 0 or more: writes cut at a sector
    u64 flipped_bits = 0;       // in never-synced bytes
    u64 directory_changes = 0;  // not yet made durable
    u64 surviving_changes = 0;  // ... of which this many survived
  };
  // The power is cut: only what the crash model keeps stays on the real disk. All
  // open files are forgotten (their descriptors closed). The disk lives again.
  CrashReport crash(const CrashOptions& options);

  // A bit of the durable content of `path` at `offset` flipped, on disk and in what a
  // crash keeps (bit rot in bytes that were synced). Again to undo it.
  void flip_durable_bit(const std::filesystem::path& path, u64 offset, u32 bit);

  // For checks: what the last sync made durable of a file (empty if unknown).
  const std::string* durable_content(const std::filesystem::path& path) const;

  // Told of every file about to be removed, with the content its last sync made
  // durable (the simulator archives journal segments, to replay the whole log).
  using UnlinkHook = std::function<void(const std::string& path, const std::string& durable)>;
  void on_unlink(UnlinkHook hook) { on_unlink_ = std::move(hook); }

  u64 changes() const noexcept { return changes_; }
  u64 injected_errors() const noexcept { return injected_errors_; }

  int open(const char* path, int flags, mode_t mode) noexcept override;
  int close(int fd) noexcept override;
  ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) noexcept override;
  int fdatasync(int fd) noexcept override;
  int fsync(int fd) noexcept override;
  int fallocate(int fd, off_t size) noexcept override;
  int unlink(const char* path) noexcept override;
  int rename(const char* from, const char* to) noexcept override;

 private:
  // A change to a file since its last sync.
  struct FileChange {
    enum Kind : u8 { write, resize } kind = write;
    u64 offset = 0;     // write
    std::string bytes;  // write
    u64 size = 0;       // resize: the file's size after (extend or truncate)
  };
  struct File {
    std::string durable;  // content as of the last sync
    std::vector<FileChange> unsynced;
    u64 size = 0;  // as the system sees it now
  };
  // A change to a directory's entries since its last fsync.
  struct EntryChange {
    enum Kind : u8 { created, removed, renamed } kind = created;
    std::string name;
    std::string to;  // rename
    u64 file = 0;    // create
  };
  struct Directory {
    std::map<std::string, u64> durable;  // name → file
    std::map<std::string, u64> current;
    std::vector<EntryChange> unsynced;
  };
  struct Open {
    std::string dir;  // the directory of the file (or the directory itself)
    u64 file = 0;     // 0: a directory
  };

  bool fail_change(int* error) noexcept;  // dead
  bool refuse(u32 per_million, bool disk_may_be_full) noexcept;
  bool chance(u32 per_million) noexcept;
  static void apply(std::string& content, const FileChange& change);
  Directory& directory(const std::string& dir);
  u64 adopt(Directory& dir, const std::string& name, const std::string& path);
  int sync_file(int fd) noexcept;

  std::mt19937_64 random_;
  Faults faults_;
  u64 dies_after_ = ~u64{0};
  bool dead_ = false;
  u64 changes_ = 0;
  u64 injected_errors_ = 0;
  u64 next_file_ = 1;
  std::map<u64, File> files_;
  std::map<std::string, Directory> directories_;
  std::map<int, Open> open_;
  UnlinkHook on_unlink_;
};

}  // namespace paygate::sim
