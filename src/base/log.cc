#include "base/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace paygate {

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto log = std::make_shared<spdlog::logger>("paygate", sink);
    log->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%fZ level=%l %v", spdlog::pattern_time_type::utc);
    log->set_level(spdlog::level::info);
    log->flush_on(spdlog::level::info);
    return log;
  }();
  return *instance;
}

void set_log_level(spdlog::level::level_enum level) {
  logger().set_level(level);
}

}  // namespace paygate
