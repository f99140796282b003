#include "sim/sim_storage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <set>

#include "base/assert.h"

namespace paygate::sim {
namespace {

std::string parent_of(const std::string& path) {
  return std::filesystem::path(path).parent_path().string();
}
std::string name_of(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_whole(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  PG_ASSERT(fd >= 0);
  std::size_t at = 0;
  while (at < content.size()) {
    const ssize_t n = ::write(fd, content.data() + at, content.size() - at);
    PG_ASSERT(n > 0);
    at += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

}  // namespace

bool SimStorage::chance(u32 per_million) noexcept {
  return per_million != 0 && random_() % 1'000'000 < per_million;
}

// Whether this change fails, with errno set: the disk died (EIO), or a fault injected
// at `per_million` (EIO, or ENOSPC too where the disk may be full).
bool SimStorage::refuse(u32 per_million, bool disk_may_be_full) noexcept {
  int error = 0;
  if (fail_change(&error)) {
    errno = error;
    return true;
  }
  if (!chance(per_million)) return false;
  ++injected_errors_;
  errno = disk_may_be_full && random_() % 2 != 0 ? ENOSPC : EIO;
  return true;
}

// Whether this change must fail: the disk died (here, or earlier).
bool SimStorage::fail_change(int* error) noexcept {
  if (!dead_ && changes_ >= dies_after_) dead_ = true;
  if (dead_) {
    *error = EIO;
    return true;
  }
  return false;
}

SimStorage::Directory& SimStorage::directory(const std::string& dir) {
  return directories_[dir];
}

// A file that exists on the real disk but was never made through this storage: taken
// as durable as it is.
u64 SimStorage::adopt(Directory& dir, const std::string& name, const std::string& path) {
  const u64 id = next_file_++;
  files_[id].durable = read_whole(path);
  files_[id].size = files_[id].durable.size();
  dir.current[name] = id;
  dir.durable[name] = id;
  return id;
}

void SimStorage::apply(std::string& content, const FileChange& change) {
  if (change.kind == FileChange::resize) {
    content.resize(change.size, '\0');
    return;
  }
  if (content.size() < change.offset + change.bytes.size()) {
    content.resize(change.offset + change.bytes.size(), '\0');
  }
  content.replace(change.offset, change.bytes.size(), change.bytes);
}

int SimStorage::open(const char* path, int flags, mode_t mode) noexcept {
  if ((flags & O_DIRECTORY) != 0) {
    const int fd = ::open(path, flags, mode);
    if (fd >= 0) open_[fd] = Open{path, 0};
    return fd;
  }
  const std::string dir_path = parent_of(path);
  const std::string name = name_of(path);
  Directory& dir = directory(dir_path);
  auto entry = dir.current.find(name);
  u64 id = entry != dir.current.end() ? entry->second : 0;
  if (id == 0 && std::filesystem::exists(path)) id = adopt(dir, name, path);
  const bool creates = id == 0 && (flags & O_CREAT) != 0;
  const bool truncates = id != 0 && (flags & O_TRUNC) != 0;
  if (creates || truncates) {
    int error = 0;
    if (fail_change(&error)) {
      errno = error;
      return -1;
    }
  }
  const int fd = ::open(path, flags, mode);
  if (fd < 0) return fd;
  if (creates) {
    id = next_file_++;
    files_[id];
    dir.current[name] = id;
    dir.unsynced.push_back(EntryChange{EntryChange::created, name, {}, id});
    ++changes_;
  } else if (truncates) {
    files_[id].unsynced.push_back(FileChange{FileChange::resize, 0, {}, 0});
    files_[id].size = 0;
    ++changes_;
  }
  PG_ASSERT(id != 0);
  open_[fd] = Open{dir_path, id};
  return fd;
}

int SimStorage::close(int fd) noexcept {
  open_.erase(fd);
  return ::close(fd);
}

ssize_t SimStorage::pwrite(int fd, const void* data, std::size_t size, off_t offset) noexcept {
  const auto it = open_.find(fd);
  PG_ASSERT(it != open_.end() && it->second.file != 0);
  if (refuse(faults_.write_error_per_million, /*disk_may_be_full=*/true)) return -1;
  const ssize_t n = ::pwrite(fd, data, size, offset);
  if (n > 0) {
    File& file = files_[it->second.file];
    file.unsynced.push_back(
        FileChange{FileChange::write, static_cast<u64>(offset),
                   std::string(static_cast<const char*>(data), static_cast<std::size_t>(n)), 0});
    file.size = std::max<u64>(file.size, static_cast<u64>(offset) + static_cast<u64>(n));
    ++changes_;
  }
  return n;
}

int SimStorage::sync_file(int fd) noexcept {
  const auto it = open_.find(fd);
  PG_ASSERT(it != open_.end());
  // An injected failure leaves what the sync was to make durable as unsure as it was:
  // a crash may keep any prefix of it (and the writer must not trust the page cache).
  if (refuse(faults_.sync_error_per_million, /*disk_may_be_full=*/false)) return -1;
  if (::fsync(fd) != 0) return -1;
  if (it->second.file == 0) {
    Directory& dir = directory(it->second.dir);
    dir.durable = dir.current;
    dir.unsynced.clear();
  } else {
    File& file = files_[it->second.file];
    for (const FileChange& change : file.unsynced)
      apply(file.durable, change);
    file.unsynced.clear();
  }
  ++changes_;
  return 0;
}

int SimStorage::fdatasync(int fd) noexcept {
  return sync_file(fd);
}
int SimStorage::fsync(int fd) noexcept {
  return sync_file(fd);
}

int SimStorage::fallocate(int fd, off_t size) noexcept {
  const auto it = open_.find(fd);
  PG_ASSERT(it != open_.end() && it->second.file != 0);
  int error = 0;
  if (fail_change(&error)) {
    errno = error;
    return -1;
  }
  if (::fallocate(fd, 0, 0, size) != 0) return -1;
  File& file = files_[it->second.file];
  if (static_cast<u64>(size) > file.size) {
    file.size = static_cast<u64>(size);
    file.unsynced.push_back(FileChange{FileChange::resize, 0, {}, file.size});
  }
  ++changes_;
  return 0;
}

int SimStorage::unlink(const char* path) noexcept {
  int error = 0;
  if (fail_change(&error)) {
    errno = error;
    return -1;
  }
  Directory& dir = directory(parent_of(path));
  const std::string name = name_of(path);
  if (on_unlink_) {
    const auto known = dir.current.find(name);
    if (known != dir.current.end()) on_unlink_(path, files_[known->second].durable);
  }
  if (::unlink(path) != 0) return -1;
  if (dir.current.erase(name) != 0) {
    dir.unsynced.push_back(EntryChange{EntryChange::removed, name, {}, 0});
  }
  ++changes_;
  return 0;
}

int SimStorage::rename(const char* from, const char* to) noexcept {
  PG_ASSERT(parent_of(from) == parent_of(to));  // the group renames within its directory
  int error = 0;
  if (fail_change(&error)) {
    errno = error;
    return -1;
  }
  if (::rename(from, to) != 0) return -1;
  Directory& dir = directory(parent_of(from));
  const std::string from_name = name_of(from);
  const std::string to_name = name_of(to);
  auto it = dir.current.find(from_name);
  const u64 id = it != dir.current.end() ? it->second : adopt(dir, to_name, to);
  if (it != dir.current.end()) dir.current.erase(it);
  dir.current[to_name] = id;
  dir.unsynced.push_back(EntryChange{EntryChange::renamed, from_name, to_name, id});
  ++changes_;
  return 0;
}

SimStorage::CrashReport SimStorage::crash(const CrashOptions& options) {
  CrashReport report;
  for (auto& [fd, open] : open_)
    ::close(fd);
  open_.clear();

  std::set<u64> kept;
  for (auto& [dir_path, dir] : directories_) {
    // A prefix of the directory's changes since its last fsync reached the disk.
    report.directory_changes += dir.unsynced.size();
    const std::size_t survive = random_() % (dir.unsynced.size() + 1);
    report.surviving_changes += survive;
    std::map<std::string, u64> entries = dir.durable;
    for (std::size_t i = 0; i < survive; ++i) {
      const EntryChange& change = dir.unsynced[i];
      switch (change.kind) {
        case EntryChange::created:
          entries[change.name] = change.file;
          break;
        case EntryChange::removed:
          entries.erase(change.name);
          break;
        case EntryChange::renamed: {
          const auto it = entries.find(change.name);
          const u64 id = it != entries.end() ? it->second : change.file;
          if (it != entries.end()) entries.erase(it);
          entries[change.to] = id;
          break;
        }
      }
    }
    // The real directory: every file this storage knows of goes, and what the crash
    // kept comes back. Files it never made (a lock file) stay as they are.
    std::set<std::string> names;
    for (const auto& [name, id] : dir.current)
      names.insert(name);
    for (const auto& [name, id] : entries)
      names.insert(name);
    for (const std::string& name : names)
      ::unlink((std::filesystem::path(dir_path) / name).c_str());
    for (const auto& [name, id] : entries) {
      File& file = files_[id];
      std::string content = file.durable;
      // A prefix of the writes since the last sync reached the disk; the last of them
      // maybe only up to a sector boundary.
      report.unsynced_writes += file.unsynced.size();
      const std::size_t whole = random_() % (file.unsynced.size() + 1);
      std::vector<std::pair<u64, u64>> unsynced_bytes;  // [offset, end) that survived
      for (std::size_t i = 0; i < whole; ++i) {
        const FileChange& change = file.unsynced[i];
        apply(content, change);
        if (change.kind == FileChange::write) {
          unsynced_bytes.emplace_back(change.offset, change.offset + change.bytes.size());
        }
      }
      report.surviving_writes += whole;
      if (whole < file.unsynced.size() && random_() % 2 == 0) {
        const FileChange& change = file.unsynced[whole];
        if (change.kind == FileChange::write) {
          const u64 first_cut = (change.offset / kSectorBytes + 1) * kSectorBytes;
          const u64 end = change.offset + change.bytes.size();
          if (first_cut < end) {
            const u64 cuts = (end - 1 - first_cut) / kSectorBytes + 1;
            const u64 cut = first_cut + (random_() % cuts) * kSectorBytes;
            FileChange part = change;
            part.bytes.resize(cut - change.offset);
            apply(content, part);
            unsynced_bytes.emplace_back(change.offset, cut);
            ++report.torn_writes;
            ++report.surviving_writes;
          }
        }
      }
      if (!unsynced_bytes.empty() && chance(options.flip_unsynced_per_million)) {
        const auto [from, to] = unsynced_bytes[random_() % unsynced_bytes.size()];
        const u64 at = from + random_() % (to - from);
        content[at] = static_cast<char>(content[at] ^ (1u << (random_() % 8)));
        ++report.flipped_bits;
      }
      write_whole((std::filesystem::path(dir_path) / name).string(), content);
      file.durable = std::move(content);
      file.size = file.durable.size();
      file.unsynced.clear();
      kept.insert(id);
      ++report.files;
    }
    dir.durable = entries;
    dir.current = std::move(entries);
    dir.unsynced.clear();
  }
  for (auto it = files_.begin(); it != files_.end();) {
    it = kept.count(it->first) != 0 ? std::next(it) : files_.erase(it);
  }
  dead_ = false;
  dies_after_ = ~u64{0};
  return report;
}

void SimStorage::flip_durable_bit(const std::filesystem::path& path, u64 offset, u32 bit) {
  Directory& dir = directory(path.parent_path().string());
  const auto it = dir.current.find(path.filename().string());
  PG_ASSERT(it != dir.current.end());
  File& file = files_[it->second];
  PG_ASSERT(offset < file.durable.size() && bit < 8 && file.unsynced.empty());
  file.durable[offset] = static_cast<char>(file.durable[offset] ^ (1u << bit));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  PG_ASSERT(fd >= 0);
  PG_ASSERT(::pwrite(fd, &file.durable[offset], 1, static_cast<off_t>(offset)) == 1);
  ::close(fd);
}

const std::string* SimStorage::durable_content(const std::filesystem::path& path) const {
  const auto dir = directories_.find(path.parent_path().string());
  if (dir == directories_.end()) return nullptr;
  const auto it = dir->second.durable.find(path.filename().string());
  if (it == dir->second.durable.end()) return nullptr;
  return &files_.at(it->second).durable;
}

}  // namespace paygate::sim
