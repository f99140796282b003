// A real redis-server for a test, started on 127.0.0.1 by scripts/redis-for-tests.sh
// in a directory of the test's, and stopped with it.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace paygate::cache::testing {

class RedisServer {
 public:
  explicit RedisServer(std::filesystem::path dir) : dir_(std::move(dir)) {}
  ~RedisServer() { stop(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  static bool installed() { return std::system("command -v redis-server >/dev/null 2>&1") == 0; }

  // Starts it, on `port` or a free one (false, with the script's words on stderr, when
  // it cannot). A new server: empty.
  bool start(int port = 0) {
    const std::string command = std::string("bash ") + PAYGATE_SOURCE_DIR +
                                "/scripts/redis-for-tests.sh start '" + dir_.string() + "' " +
                                (port > 0 ? std::to_string(port) : "") + " >/dev/null";
    if (std::system(command.c_str()) != 0) return false;
    std::ifstream port_file(dir_ / "port");
    port_file >> port_;
    running_ = port_ > 0;
    return running_;
  }
  // Stops it; port() stays what it was (to start again there).
  void stop() {
    if (!running_) return;
    const std::string command = std::string("bash ") + PAYGATE_SOURCE_DIR +
                                "/scripts/redis-for-tests.sh stop '" + dir_.string() + "'";
    (void)std::system(command.c_str());
    running_ = false;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const noexcept { return port_; }
  // Runs redis-cli against it; its output.
  std::string cli(const std::string& arguments) const {
    const std::string command =
        "redis-cli -h 127.0.0.1 -p " + std::to_string(port_) + " " + arguments + " 2>&1";
    std::string out;
    if (FILE* pipe = ::popen(command.c_str(), "r")) {
      char buffer[4096];
      std::size_t n = 0;
      while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
        out.append(buffer, n);
      ::pclose(pipe);
    }
    while (!out.empty() && out.back() == '\n')
      out.pop_back();
    return out;
  }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace paygate::cache::testing
