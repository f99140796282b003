#include "base/assert.h"

#include <cstdio>
#include <cstdlib>

namespace paygate {

void assertion_failed(const char* expression, const char* file, int line) noexcept {
  std::fprintf(stderr, "paygate: assertion failed: %s at %s:%d\n", expression, file, line);
  std::fflush(stderr);
  std::abort();
}

}  // namespace paygate
