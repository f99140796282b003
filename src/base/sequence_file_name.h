// File names that carry a sequence number in 20 digits ("journal-00000000000000000042.seg"),
// so that names sort in sequence order. Shared by journal segments and snapshots.
#pragma once

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>

#include "base/types.h"

namespace paygate {

inline std::string sequence_file_name(std::string_view prefix, u64 sequence,
                                      std::string_view suffix) {
  char digits[21];
  std::snprintf(digits, sizeof digits, "%020llu", static_cast<unsigned long long>(sequence));
  std::string name(prefix);
  name.append(digits, 20).append(suffix);
  return name;
}

// The sequence in a name made by sequence_file_name with this prefix and suffix, or
// 0 for any other name.
inline u64 parse_sequence_file_name(std::string_view name, std::string_view prefix,
                                    std::string_view suffix) noexcept {
  if (name.size() != prefix.size() + 20 + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return 0;
  }
  u64 value = 0;
  const char* first = name.data() + prefix.size();
  const auto [end, error] = std::from_chars(first, first + 20, value);
  return error == std::errc{} && end == first + 20 ? value : 0;
}

}  // namespace paygate
