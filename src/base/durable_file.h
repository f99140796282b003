// Small files that must survive a crash whole or not at all (registries, secrets):
// written to a temporary file, fsynced, renamed over the old one, and the directory
// fsynced, so a reader sees either the old content or the new, never a mix.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace paygate {

// True on success; otherwise `error` says which step failed and why.
[[nodiscard]] bool write_file_durably(const std::filesystem::path& path, std::string_view content,
                                      mode_t mode, std::string* error);

// The whole file, or nothing if it does not exist; `error` is set on other failures.
std::optional<std::string> read_file(const std::filesystem::path& path, std::string* error);

}  // namespace paygate
