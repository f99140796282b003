#include "snapshot/snapshot.h"

#include "base/assert.h"
#include "base/sequence_file_name.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "base/crc32c.h"

namespace paygate::snapshot {
namespace {

u64 steady_ns() {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
}

// Buffers the ledger's state into a caller-provided buffer, writing it out when full
// and keeping its CRC. No allocation, no locks: safe after fork().
class FileSink final : public StateSink {
 public:
  FileSink(Storage& storage, int fd, u64 offset, unsigned char* buffer,
           std::size_t capacity) noexcept
      : storage_(storage), fd_(fd), offset_(offset), buffer_(buffer), capacity_(capacity) {}

  void write(const void* data, std::size_t size) noexcept override {
    const auto* bytes = static_cast<const unsigned char*>(data);
    crc_ = crc32c_extend(crc_, bytes, size);
    total_ += size;
    while (size > 0 && error_ == 0) {
      const std::size_t take = std::min(size, capacity_ - used_);
      std::memcpy(buffer_ + used_, bytes, take);
      used_ += take;
      bytes += take;
      size -= take;
      if (used_ == capacity_) flush();
    }
  }
  void flush() noexcept {
    if (error_ == 0 && used_ > 0) {
      if (storage_.pwrite_all(fd_, buffer_, used_, static_cast<off_t>(offset_))) {
        offset_ += used_;
      } else {
        error_ = errno;
      }
    }
    used_ = 0;
  }
  u32 crc() const noexcept { return crc_; }
  u64 total() const noexcept { return total_; }
  u64 offset() const noexcept { return offset_; }
  int error() const noexcept { return error_; }

 private:
  Storage& storage_;
  int fd_;
  u64 offset_;
  unsigned char* buffer_;
  std::size_t capacity_;
  std::size_t used_ = 0;
  u32 crc_ = 0;
  u64 total_ = 0;
  int error_ = 0;
};

// The state of a mapped snapshot, read in order.
class MappedSource final : public StateSource {
 public:
  MappedSource(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}
  bool read(void* out, std::size_t size) noexcept override {
    if (size > size_ - at_) return false;
    std::memcpy(out, data_ + at_, size);
    at_ += size;
    return true;
  }
  bool finished() const noexcept { return at_ == size_; }

 private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// Loads one snapshot file; "" on success, else why not.
std::string load_file(const std::filesystem::path& path, Ledger& ledger, u64* sequence) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 ||
      static_cast<u64>(st.st_size) < sizeof(SnapshotHeader) + sizeof(SnapshotTrailer)) {
    ::close(fd);
    return "too short";
  }
  const std::size_t size = static_cast<std::size_t>(st.st_size);
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapped == MAP_FAILED) return fmt::format("cannot map: {}", std::strerror(errno));
  ::madvise(mapped, size, MADV_SEQUENTIAL);
  const auto* bytes = static_cast<const unsigned char*>(mapped);
  std::string why;
  SnapshotHeader header;
  SnapshotTrailer trailer;
  std::memcpy(&header, bytes, sizeof header);
  if (header.magic != kMagic || header.version != kVersion) {
    why = "not a snapshot of this version";
  } else if (header.state_bytes != size - sizeof header - sizeof trailer) {
    why = fmt::format("size {} does not match the header", size);
  } else {
    std::memcpy(&trailer, bytes + size - sizeof trailer, sizeof trailer);
    if (trailer.magic != kEndMagic || trailer.header_crc != crc32c(bytes, sizeof header) ||
        trailer.state_crc != crc32c(bytes + sizeof header, header.state_bytes)) {
      why = "checksum mismatch";
    } else {
      MappedSource source(bytes + sizeof header, header.state_bytes);
      if (const Status loaded = ledger.load(source); !loaded.ok()) {
        why = "state rejected: " + loaded.to_string();
      } else if (!source.finished()) {
        why = "state has trailing bytes";
      } else if (ledger.last_stamp().sequence != header.sequence) {
        why = "state and header disagree on the sequence";
      } else {
        *sequence = header.sequence;
      }
    }
  }
  ::munmap(mapped, size);
  return why;
}

}  // namespace

std::string file_name(u64 sequence) {
  return sequence_file_name("snapshot-", sequence, ".snap");
}

u64 parse_file_name(std::string_view name) noexcept {
  return parse_sequence_file_name(name, "snapshot-", ".snap");
}

std::vector<std::pair<u64, std::filesystem::path>> list(const std::filesystem::path& dir) {
  std::vector<std::pair<u64, std::filesystem::path>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const u64 sequence = parse_file_name(entry.path().filename().string());
    if (sequence != 0 && entry.is_regular_file()) found.emplace_back(sequence, entry.path());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  return found;
}

int write_file(const Ledger& ledger, const char* path, unsigned char* buffer,
               std::size_t buffer_bytes, Storage& storage) noexcept {
  const int fd = storage.open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);  // the ledger
  if (fd < 0) return errno;
  SnapshotHeader header{};
  header.magic = kMagic;
  header.version = kVersion;
  header.region = ledger.config().prefix.region;
  header.group = ledger.config().prefix.group;
  header.sequence = ledger.last_stamp().sequence;
  header.timestamp_ns = ledger.last_stamp().timestamp_ns;
  // The header's state_bytes is known at the end: the state goes after its place, the
  // trailer after the state, and the header last.
  FileSink sink(storage, fd, sizeof header, buffer, buffer_bytes);
  ledger.save(sink);
  sink.flush();
  int error = sink.error();
  if (error == 0) {
    header.state_bytes = sink.total();
    PG_ASSERT(sink.offset() == sizeof header + header.state_bytes);
    const SnapshotTrailer trailer{crc32c(&header, sizeof header), sink.crc(), kEndMagic};
    if (!storage.pwrite_all(fd, &trailer, sizeof trailer, static_cast<off_t>(sink.offset())) ||
        !storage.pwrite_all(fd, &header, sizeof header, 0) || storage.fsync(fd) != 0) {
      error = errno;
    }
  }
  storage.close(fd);
  return error;
}

LoadResult load_newest(const std::filesystem::path& dir,
                       const std::function<std::unique_ptr<Ledger>()>& make_ledger, u64 at_most) {
  LoadResult result;
  for (const auto& [sequence, path] : list(dir)) {
    if (sequence > at_most) continue;
    std::unique_ptr<Ledger> ledger = make_ledger();
    u64 loaded = 0;
    const std::string why = load_file(path, *ledger, &loaded);
    if (why.empty() && loaded == sequence) {
      // What was loaded is the state after the sequence its name says, and whole.
      PG_ASSERT(result.ledger == nullptr);
      PG_ASSERT(ledger->last_stamp().sequence == sequence);
      result.ledger = std::move(ledger);
      result.sequence = loaded;
      result.file = path;
      return result;
    }
    result.skipped.push_back(
        fmt::format("{}: {}", path.string(), why.empty() ? "name and content disagree" : why));
  }
  return result;
}

u64 prune(const std::filesystem::path& dir, u32 keep, Storage& storage, u64 keep_at_or_before) {
  PG_ASSERT(keep >= 1);  // the newest snapshot is never pruned: recovery needs it
  std::error_code ec;
  std::vector<std::filesystem::path> strays;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("snapshot-") && name.ends_with(".tmp")) strays.push_back(entry.path());
  }
  std::sort(strays.begin(), strays.end());  // the same order on every run (the simulator)
  for (const auto& stray : strays)
    storage.unlink(stray.c_str());
  const auto snapshots = list(dir);  // newest first
  // Beyond the newest `keep`: the newest at or before keep_at_or_before stays too
  // (unless one of those is already).
  std::size_t also = snapshots.size();
  for (std::size_t i = 0; i < snapshots.size() && keep_at_or_before != 0; ++i) {
    if (snapshots[i].first <= keep_at_or_before) {
      if (i >= keep) also = i;
      break;
    }
  }
  for (std::size_t i = keep; i < snapshots.size(); ++i) {
    if (i != also) storage.unlink(snapshots[i].second.c_str());
  }
  if (snapshots.empty()) return 0;
  const std::size_t oldest =
      also < snapshots.size() ? also : std::min<std::size_t>(keep, snapshots.size()) - 1;
  const u64 oldest_kept = snapshots[oldest].first;
  PG_ASSERT(oldest_kept >= 1 && oldest_kept <= snapshots.front().first);
  return oldest_kept;
}

Snapshotter::Snapshotter(std::filesystem::path dir, std::size_t buffer_bytes, Storage* storage,
                         bool in_process)
    : dir_(std::move(dir)),
      buffer_(buffer_bytes),
      storage_(storage != nullptr ? storage : &Storage::posix()),
      in_process_(in_process) {}

Snapshotter::~Snapshotter() {
  if (child_ > 0 && !in_process_) {
    ::kill(child_, SIGKILL);
    ::waitpid(child_, nullptr, 0);
  }
}

bool Snapshotter::start(const Ledger& ledger) {
  if (child_ > 0) return false;
  // Snapshots only move forward: a new one covers more than the last published.
  PG_ASSERT(ledger.last_stamp().sequence >= last_published_);
  sequence_ = ledger.last_stamp().sequence;
  // The process's own temporary name: a child of an earlier server, killed while this
  // child wrote, may still be writing the same sequence's snapshot (it holds no LOCK:
  // see below), and must never write into the file this server publishes. The child
  // also unlinks the name before it creates the file, so that even an earlier server
  // with the same pid (pids are reused) leaves its child writing a file no one sees.
  tmp_path_ = (dir_ / fmt::format("{}.{}.tmp", file_name(sequence_), ::getpid())).string();
  const char* path = tmp_path_.c_str();  // built before fork: the child must not allocate
  unsigned char* buffer = buffer_.data();
  const std::size_t buffer_bytes = buffer_.size();
  started_ns_ = steady_ns();
  if (in_process_) {
    // The simulator: written here and now, through its storage, as the child would.
    child_ = kInProcessChild;
    written_ = false;
    in_process_error_ = write_file(ledger, path, buffer, buffer_bytes, *storage_);
    last_pause_ns_ = steady_ns() - started_ns_;
    return true;
  }
  rlimit files{};
  const int files_max = ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < (1u << 20)
                            ? static_cast<int>(files.rlim_cur)
                            : 1 << 20;
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: a frozen copy of the ledger. It needs none of the files it inherited
    // (it opens its own): closed at once, so that a parent killed while the child still
    // writes releases its groups' LOCKs and its listening sockets then, and a restart
    // is not refused as "another paygate" by a child that outlived it. Low priority:
    // the group goes first.
    if (::close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < files_max; ++fd)  // a kernel before 5.9
        ::close(fd);
    }
    ::setpriority(PRIO_PROCESS, 0, 10);
    ::unlink(path);
    ::_exit(write_file(ledger, path, buffer, buffer_bytes, Storage::posix()) == 0 ? 0 : 1);
  }
  last_pause_ns_ = steady_ns() - started_ns_;
  pause_ns_.record(last_pause_ns_);
  if (pid < 0) return false;
  child_ = pid;
  written_ = false;
  return true;
}

Snapshotter::Progress Snapshotter::poll(u64 durable_sequence, std::string* message) {
  if (child_ <= 0) return Progress::idle;
  if (!written_) {
    int status = 0;
    const pid_t reaped = in_process_ ? child_ : ::waitpid(child_, &status, WNOHANG);
    if (reaped == 0) return Progress::running;
    const bool failed = in_process_ ? in_process_error_ != 0
                                    : reaped < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (failed) {
      child_ = 0;
      storage_->unlink(tmp_path_.c_str());
      *message = in_process_ ? fmt::format("snapshot at sequence {} failed: {}", sequence_,
                                           std::strerror(in_process_error_))
                             : fmt::format("snapshot at sequence {} failed (child status {})",
                                           sequence_, status);
      return Progress::failed;
    }
    written_ = true;
    duration_ns_.record(steady_ns() - started_ns_);
  }
  if (durable_sequence < sequence_) return Progress::running;  // not yet acknowledged
  // Published only once every command it holds is durable in the journal: a snapshot
  // never holds what a crash could take back.
  PG_ASSERT(written_ && durable_sequence >= sequence_);
  const std::filesystem::path final_path = dir_ / file_name(sequence_);
  child_ = 0;
  int error = 0;
  if (storage_->rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
    error = errno;
  } else {
    error = storage_->sync_directory(dir_.c_str());
  }
  if (error != 0) {
    *message =
        fmt::format("cannot publish snapshot {}: {}", final_path.string(), std::strerror(error));
    return Progress::failed;
  }
  PG_ASSERT(sequence_ >= last_published_);
  last_published_ = sequence_;
  *message = fmt::format("snapshot {} published after {:.1f} ms (fork paused the group {:.3f} ms)",
                         final_path.string(), static_cast<double>(steady_ns() - started_ns_) / 1e6,
                         static_cast<double>(last_pause_ns_) / 1e6);
  return Progress::published;
}

}  // namespace paygate::snapshot
