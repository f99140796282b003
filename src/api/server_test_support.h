// Starts the real `paygate serve` on 127.0.0.1 (a free port) for tests, and signs
// requests the way merchants do.
#pragma once

#include <fcntl.h>
#include <jwt.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "api/crypto.h"
#include "api/http_client.h"

namespace paygate::api::testing {

class ServerProcess {
 public:
  // `config_toml`: contents of a --config file, if not empty.
  bool start(const std::filesystem::path& data_dir, const std::string& config_toml = {},
             const std::vector<std::string>& extra_args = {}) {
    data_dir_ = data_dir;
    std::filesystem::create_directories(data_dir);
    log_path_ = data_dir.string() + ".log";
    std::vector<std::string> args = {PAYGATE_PATH, "serve",       "--data-dir", data_dir.string(),
                                     "--http",     "127.0.0.1:0", "--binary",   "127.0.0.1:0"};
    if (!config_toml.empty()) {
      const std::string config_path = data_dir.string() + ".toml";
      std::ofstream(config_path) << config_toml;
      args.push_back("--config");
      args.push_back(config_path);
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    // A restart appends to the same log: look only at what this start writes.
    std::size_t log_start = 0;
    {
      std::error_code ec;
      const auto size = std::filesystem::file_size(log_path_, ec);
      if (!ec) log_start = static_cast<std::size_t>(size);
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // Wait for the ports, then for readiness. Test servers are sized to start in a
    // second or two even under a sanitizer; the bound is for a machine that is busy.
    const auto started = std::chrono::steady_clock::now();
    const auto deadline = started + std::chrono::seconds(60);
    const std::regex http_line(R"(event=listening http=127\.0\.0\.1:(\d+))");
    const std::regex binary_line(R"(event=listening_binary address=127\.0\.0\.1:(\d+))");
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(log_path_);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      std::smatch match;
      const std::string tail = text.size() > log_start ? text.substr(log_start) : "";
      if (std::regex_search(tail, match, http_line)) port_ = static_cast<u16>(std::stoi(match[1]));
      if (std::regex_search(tail, match, binary_line)) {
        binary_port_ = static_cast<u16>(std::stoi(match[1]));
      }
      if (port_ != 0 && tail.find("event=ready") != std::string::npos) {
        std::ifstream token(data_dir / "admin_token");
        std::getline(token, admin_token_);
        return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Say how far it got: how long recovery took is in its event=recovered lines.
    std::fprintf(stderr, "ServerProcess: not ready after %.1f s (see the log below)\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return false;
  }

  // SIGTERM, and the exit status (or -1).
  int stop(int signal = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    port_ = 0;
    binary_port_ = 0;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  }

  ~ServerProcess() { stop(SIGKILL); }

  u16 port() const { return port_; }
  u16 binary_port() const { return binary_port_; }
  pid_t pid() const { return pid_; }
  const std::string& admin_token() const { return admin_token_; }
  std::string log() const {
    std::ifstream in(log_path_);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }

 private:
  std::filesystem::path data_dir_;
  std::string log_path_;
  pid_t pid_ = -1;
  u16 port_ = 0;
  u16 binary_port_ = 0;
  std::string admin_token_;
};

// Unix seconds with a fraction unique to this process's every call, so that two
// identical requests signed in one second still have different signatures.
inline std::string unix_now() {
  static std::atomic<u64> last{0};
  const u64 micros = static_cast<u64>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  u64 previous = last.load();
  u64 unique = std::max(micros, previous + 1);
  while (!last.compare_exchange_weak(previous, unique))
    unique = std::max(micros, previous + 1);
  char text[32];
  std::snprintf(text, sizeof text, "%llu.%06llu",
                static_cast<unsigned long long>(unique / 1'000'000),
                static_cast<unsigned long long>(unique % 1'000'000));
  return text;
}

// The three headers of a signed request (API.md).
inline std::vector<std::string> signed_headers(const std::string& key_id, const std::string& secret,
                                               std::string_view method, std::string_view target,
                                               std::string_view body,
                                               const std::string& timestamp = unix_now()) {
  const Digest mac = hmac_sha256(secret, {timestamp, "\n", method, "\n", target, "\n", body});
  return {"X-Paygate-Key: " + key_id, "X-Paygate-Timestamp: " + timestamp,
          "X-Paygate-Signature: " + to_hex(mac), "Content-Type: application/json"};
}

inline std::string make_jwt(const std::string& merchant_id, const std::string& secret,
                            long expires_at, jwt_alg_t alg = JWT_ALG_HS256,
                            const std::vector<std::pair<std::string, long>>& more = {}) {
  jwt_t* jwt = nullptr;
  jwt_new(&jwt);
  jwt_add_grant(jwt, "sub", merchant_id.c_str());
  jwt_add_grant_int(jwt, "exp", expires_at);
  for (const auto& [name, value] : more)
    jwt_add_grant_int(jwt, name.c_str(), value);
  jwt_set_alg(jwt, alg,
              alg == JWT_ALG_NONE ? nullptr : reinterpret_cast<const unsigned char*>(secret.data()),
              alg == JWT_ALG_NONE ? 0 : static_cast<int>(secret.size()));
  char* text = jwt_encode_str(jwt);
  std::string token = text ? text : "";
  free(text);  // libjwt 1.10 allocates with malloc
  jwt_free(jwt);
  return token;
}

}  // namespace paygate::api::testing
