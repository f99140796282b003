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

bool write_all(int fd, const unsigned char* data, std::size_t size) noexcept {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Buffers the ledger's state into a caller-provided buffer, writing it out when full
// and keeping its CRC. No allocation, no locks: safe after fork().
class FileSink final : public StateSink {
 public:
  FileSink(int fd, unsigned char* buffer, std::size_t capacity) noexcept
      : fd_(fd), buffer_(buffer), capacity_(capacity) {}

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
    if (error_ == 0 && used_ > 0 && !write_all(fd_, buffer_, used_)) error_ = errno;
    used_ = 0;
  }
  u32 crc() const noexcept { return crc_; }
  u64 total() const noexcept { return total_; }
  int error() const noexcept { return error_; }

 private:
  int fd_;
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

int fsync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int result = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return result;
}

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
               std::size_t buffer_bytes) noexcept {
  const int fd = ::open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);  // the whole ledger
  if (fd < 0) return errno;
  SnapshotHeader header{};
  header.magic = kMagic;
  header.version = kVersion;
  header.region = ledger.config().prefix.region;
  header.group = ledger.config().prefix.group;
  header.sequence = ledger.last_stamp().sequence;
  header.timestamp_ns = ledger.last_stamp().timestamp_ns;
  int error = 0;
  // The header's state_bytes is known at the end: write a placeholder, then the state.
  if (!write_all(fd, reinterpret_cast<const unsigned char*>(&header), sizeof header)) error = errno;
  FileSink sink(fd, buffer, buffer_bytes);
  if (error == 0) {
    ledger.save(sink);
    sink.flush();
    error = sink.error();
  }
  if (error == 0) {
    header.state_bytes = sink.total();
    const SnapshotTrailer trailer{crc32c(&header, sizeof header), sink.crc(), kEndMagic};
    if (!write_all(fd, reinterpret_cast<const unsigned char*>(&trailer), sizeof trailer) ||
        ::pwrite(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header) ||
        ::fsync(fd) != 0) {
      error = errno;
    }
  }
  ::close(fd);
  return error;
}

LoadResult load_newest(const std::filesystem::path& dir,
                       const std::function<std::unique_ptr<Ledger>()>& make_ledger) {
  LoadResult result;
  for (const auto& [sequence, path] : list(dir)) {
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

u64 prune(const std::filesystem::path& dir, u32 keep) {
  PG_ASSERT(keep >= 1);  // the newest snapshot is never pruned: recovery needs it
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("snapshot-") && name.ends_with(".tmp"))
      std::filesystem::remove(entry.path(), ec);
  }
  const auto snapshots = list(dir);
  for (std::size_t i = keep; i < snapshots.size(); ++i)
    std::filesystem::remove(snapshots[i].second, ec);
  if (snapshots.empty()) return 0;
  const u64 oldest_kept = snapshots[std::min<std::size_t>(keep, snapshots.size()) - 1].first;
  PG_ASSERT(oldest_kept >= 1 && oldest_kept <= snapshots.front().first);
  return oldest_kept;
}

Snapshotter::Snapshotter(std::filesystem::path dir, std::size_t buffer_bytes)
    : dir_(std::move(dir)), buffer_(buffer_bytes) {}

Snapshotter::~Snapshotter() {
  if (child_ > 0) {
    ::kill(child_, SIGKILL);
    ::waitpid(child_, nullptr, 0);
  }
}

bool Snapshotter::start(const Ledger& ledger) {
  if (child_ > 0) return false;
  // Snapshots only move forward: a new one covers more than the last published.
  PG_ASSERT(ledger.last_stamp().sequence >= last_published_);
  sequence_ = ledger.last_stamp().sequence;
  tmp_path_ = (dir_ / (file_name(sequence_) + ".tmp")).string();
  const char* path = tmp_path_.c_str();  // built before fork: the child must not allocate
  unsigned char* buffer = buffer_.data();
  const std::size_t buffer_bytes = buffer_.size();
  started_ns_ = steady_ns();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: a frozen copy of the ledger. Low priority: the group goes first.
    ::setpriority(PRIO_PROCESS, 0, 10);
    ::_exit(write_file(ledger, path, buffer, buffer_bytes) == 0 ? 0 : 1);
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
    const pid_t reaped = ::waitpid(child_, &status, WNOHANG);
    if (reaped == 0) return Progress::running;
    if (reaped < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      child_ = 0;
      std::error_code ec;
      std::filesystem::remove(tmp_path_, ec);
      *message = fmt::format("snapshot at sequence {} failed (child status {})", sequence_, status);
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
  if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0 || fsync_dir(dir_) != 0) {
    *message =
        fmt::format("cannot publish snapshot {}: {}", final_path.string(), std::strerror(errno));
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
