// Small files that must survive a crash whole or not at all (registries, secrets):
// written to a temporary file, fsynced, renamed over the old one, and the directory
// fsynced, so a reader sees either the old content or the new, never a mix.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "base/status.h"

namespace paygate {

// io_error says which step failed and why.
Status write_file_durably(const std::filesystem::path& path, std::string_view content, mode_t mode);

// The whole file; not_found if it does not exist, io_error on other failures.
Result<std::string> read_file(const std::filesystem::path& path);

}  // namespace paygate
