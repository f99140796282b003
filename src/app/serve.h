// `paygate serve`: the gateway. Options come from flags, then environment variables
// (PAYGATE_*), then the TOML file given by --config, then embedded defaults; see
// docs/OPERATING.md.
#pragma once

#include <filesystem>
#include <string>

#include "base/status.h"
#include "base/types.h"
#include "history/worker.h"
#include "pipeline/engine.h"

namespace paygate {

struct ServeOptions {
  std::filesystem::path data_dir = "paygate-data";
  std::string http = "127.0.0.1:8080";
  std::string binary = "127.0.0.1:8081";  // empty: no binary listener
  std::string admin_token;                // empty: generated once, kept in the data dir
  u32 groups = 1;
  std::filesystem::path config_file;  // optional TOML for everything else
};

int run_serve(const ServeOptions& options);

// The engine and history settings `paygate serve` would run with these options (flags,
// environment, TOML), for tools that read its data directory (projection rebuild).
Status served_settings(const ServeOptions& options, EngineConfig* engine,
                       history::HistoryConfig* history);

}  // namespace paygate
