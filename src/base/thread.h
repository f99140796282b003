// Small helpers for the threads paygate starts.
#pragma once

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace paygate {

// Sets the calling thread's nice value; false if not allowed (raising priority needs
// CAP_SYS_NICE), in which case the thread keeps its priority.
inline bool set_thread_nice(int nice) noexcept {
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  return ::setpriority(PRIO_PROCESS, tid, nice) == 0;
}

}  // namespace paygate
