// Assertions that stay on in every build type.
//
// PG_ASSERT documents an invariant: if it fails, paygate has a bug, and going on could
// move money wrongly, so the process prints where and stops. Business outcomes
// (insufficient funds, unknown ids, ...) are never assertions: they are ResultCodes.
#pragma once

namespace paygate {

[[noreturn]] void assertion_failed(const char* expression, const char* file, int line) noexcept;

}  // namespace paygate

#define PG_ASSERT(condition)                         \
  (__builtin_expect(static_cast<bool>(condition), 1) \
       ? static_cast<void>(0)                        \
       : ::paygate::assertion_failed(#condition, __FILE__, __LINE__))
