// Structured logging: one line per event, "key=value" pairs after a timestamp and a
// level, so lines can be grepped and parsed (logfmt). Never on a hot path.
//
//   PG_LOG_INFO("event=recovery group={} records={}", group, records);
#pragma once

#include <spdlog/spdlog.h>

namespace paygate {

// The process logger (stderr). Set once by main; tests get the default.
spdlog::logger& logger();
void set_log_level(spdlog::level::level_enum level);

}  // namespace paygate

#define PG_LOG_DEBUG(...) ::paygate::logger().debug(__VA_ARGS__)
#define PG_LOG_INFO(...) ::paygate::logger().info(__VA_ARGS__)
#define PG_LOG_WARN(...) ::paygate::logger().warn(__VA_ARGS__)
#define PG_LOG_ERROR(...) ::paygate::logger().error(__VA_ARGS__)
