#include "base/storage.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace paygate {
namespace {

class PosixStorage final : public Storage {
 public:
  int open(const char* path, int flags, mode_t mode) noexcept override {
    return ::open(path, flags, mode);
  }
  int close(int fd) noexcept override { return ::close(fd); }
  ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) noexcept override {
    return ::pwrite(fd, data, size, offset);
  }
  int fdatasync(int fd) noexcept override { return ::fdatasync(fd); }
  int fsync(int fd) noexcept override { return ::fsync(fd); }
  int fallocate(int fd, off_t size) noexcept override { return ::fallocate(fd, 0, 0, size); }
  int unlink(const char* path) noexcept override { return ::unlink(path); }
  int rename(const char* from, const char* to) noexcept override { return ::rename(from, to); }
};

}  // namespace

bool Storage::pwrite_all(int fd, const void* data, std::size_t size, off_t offset) noexcept {
  const auto* bytes = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = pwrite(fd, bytes, size, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;  // a write that makes no progress
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<std::size_t>(n);
    offset += n;
  }
  return true;
}

int Storage::sync_directory(const char* dir) noexcept {
  const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return errno;
  const int result = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return result;
}

Storage& Storage::posix() noexcept {
  static PosixStorage storage;
  return storage;
}

}  // namespace paygate
