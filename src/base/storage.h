// Every operation that changes a file the journal or a snapshot depends on, behind one
// interface: production calls the system (Storage::posix()); the simulator's storage
// (src/sim) keeps what each file held at its last sync, and on a simulated crash
// leaves only that (and, maybe, part of what was written after), and injects failures
// (docs/SIMULATION.md). Reads need no seam: they see what the system shows.
//
// The calls mirror the system's (a result of -1 with errno set on failure), so the
// code that uses them reads like the system calls it makes. They allocate nothing, so
// a forked snapshot child may use posix().
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace paygate {

class Storage {
 public:
  virtual ~Storage() = default;

  virtual int open(const char* path, int flags, mode_t mode) noexcept = 0;  // open(2)
  virtual int close(int fd) noexcept = 0;
  virtual ssize_t pwrite(int fd, const void* data, std::size_t size, off_t offset) noexcept = 0;
  virtual int fdatasync(int fd) noexcept = 0;
  virtual int fsync(int fd) noexcept = 0;  // a file, or a directory opened O_DIRECTORY
  virtual int fallocate(int fd, off_t size) noexcept = 0;  // mode 0, from offset 0
  virtual int unlink(const char* path) noexcept = 0;
  virtual int rename(const char* from, const char* to) noexcept = 0;

  // Writes all of [data, data + size) at offset, retrying short writes and EINTR.
  bool pwrite_all(int fd, const void* data, std::size_t size, off_t offset) noexcept;
  // Opens the directory and fsyncs it (its entries: files made, removed, renamed). 0,
  // or the errno.
  int sync_directory(const char* dir) noexcept;

  // The system's calls, as they are.
  static Storage& posix() noexcept;
};

}  // namespace paygate
