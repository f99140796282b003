// What each principal may do, against the real server (docs/API.md, "Security
// model"): the rules an adversarial probe of the API checks.
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <jwt.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/server_fixture.h"

namespace paygate::api {
namespace {

// Posting a hold captures the debit account's money: only the debit side's owner (or
// an operator) posts; the credit side may only release it (issue: a sub-merchant on
// the credit side of its parent's hold posted it and captured the parent's money).
TEST_F(ServerTest, OnlyTheDebitSidePostsAHoldAndEitherSideVoidsIt) {
  const MerchantKeys parent = merchant("Parent");
  const MerchantKeys child = merchant("Child", parent.id);
  const std::string parents = account(parent);
  const std::string childs = account(child);
  fund(system_account(), parents, 100);
  const auto hold = [&] {
    const HttpResponse r = merchant_request(
        parent, "POST", "/v1/transfers", transfer_body(parents, childs, 30, R"(,"pending":true)"));
    EXPECT_EQ(r.status, 201u) << r.body;
    return text_field(r.body, "/id");
  };
  const std::string first = hold();
  // The child sees the hold (its account is the credit side) but may not capture it.
  EXPECT_EQ(merchant_request(child, "GET", "/v1/transfers/" + first).status, 200u);
  const HttpResponse taken =
      merchant_request(child, "POST", "/v1/transfers/" + first + "/post", "{}");
  EXPECT_EQ(taken.status, 403u) << taken.body;
  EXPECT_EQ(error_code(taken), "post_not_allowed");
  // Nor inside a batch.
  const HttpResponse batched =
      merchant_request(child, "POST", "/v1/batch",
                       R"({"operations":[{"op":"post","transfer_id":")" + first + R"("}]})");
  EXPECT_EQ(batched.status, 200u) << batched.body;
  EXPECT_EQ(text_field(batched.body, "/results/0/body/error/code"), "post_not_allowed");
  EXPECT_EQ(balance(parents), 100);
  EXPECT_EQ(balance(parents, "/held"), 30);
  EXPECT_EQ(balance(childs), 0);
  // The child may release it.
  const HttpResponse released =
      merchant_request(child, "POST", "/v1/transfers/" + first + "/void", "{}");
  EXPECT_EQ(released.status, 200u) << released.body;
  EXPECT_EQ(balance(parents, "/held"), 0);
  // The parent (the debit side) posts its own hold; so may an operator.
  const std::string second = hold();
  EXPECT_EQ(merchant_request(parent, "POST", "/v1/transfers/" + second + "/post", "{}").status,
            200u);
  const std::string third = hold();
  EXPECT_EQ(admin_post("/v1/transfers/" + third + "/post", "{}").status, 200u);
  EXPECT_EQ(balance(parents), 40);
  EXPECT_EQ(balance(childs), 60);
}

// Issue: a Transfer-Encoding other than exactly "chunked" was accepted and its body
// answered as a second request: behind a proxy that reads the framing otherwise, a
// smuggled request. Each is now 400, and the connection closed.
TEST_F(ServerTest, AmbiguousFramingIsRefusedAndTheConnectionClosed) {
  const std::string smuggled = "GET /v1/accounts/acc_0000000000000001 HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string chunk = "0\r\n\r\n";
  const std::vector<std::string> heads = {
      "Transfer-Encoding: xchunked",
      "Transfer-Encoding: chunked, identity",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
      "Transfer-Encoding: identity",
      "Transfer-Encoding: chunked\r\nContent-Length: " + std::to_string(smuggled.size()),
      "Transfer-Encoding:\r\n chunked",  // obs-fold
  };
  for (const std::string& head : heads) {
    HttpClient raw("127.0.0.1", server_.port());
    ASSERT_TRUE(
        raw.send_raw("POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "application/json\r\n" +
                     head + "\r\n\r\n" + smuggled));
    const HttpResponse first = raw.receive(5000);
    EXPECT_EQ(first.status, 400u) << head;
    EXPECT_EQ(first.header("connection"), "close") << head;
    // Nothing after it is read as a request: the connection is closed.
    EXPECT_EQ(raw.receive(2000).status, 0u) << head;
  }
  // HTTP/1.0 with a Transfer-Encoding, even chunked.
  HttpClient old("127.0.0.1", server_.port());
  ASSERT_TRUE(
      old.send_raw("POST /v1/accounts HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n" +
                   chunk));
  EXPECT_EQ(old.receive(5000).status, 400u);
  // Plain chunked framing still works.
  HttpClient fine("127.0.0.1", server_.port());
  ASSERT_TRUE(fine.send_raw("POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                            server_.admin_token() +
                            "\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                            "chunked\r\n\r\n12\r\n{\"currency\":\"USD\"}\r\n" +
                            chunk));
  const HttpResponse made = fine.receive(5000);
  EXPECT_EQ(made.status, 201u) << made.body;
}

// Issue: Content-Type was matched as a prefix and case-sensitively.
TEST_F(ServerTest, ContentTypeIsParsedAsAMediaType) {
  const std::string body = R"({"currency":"USD","kind":"system"})";
  const auto with = [&](const std::string& type) {
    return client_->request(
        "POST", "/v1/accounts",
        {"Authorization: Bearer " + server_.admin_token(), "Content-Type: " + type}, body);
  };
  EXPECT_EQ(with("application/jsonp").status, 415u);
  EXPECT_EQ(with("application/json-patch").status, 415u);
  EXPECT_EQ(with("text/json").status, 415u);
  EXPECT_EQ(with("APPLICATION/JSON").status, 201u);
  EXPECT_EQ(with("application/json; charset=utf-8").status, 201u);
  EXPECT_EQ(with(" Application/Json ;charset=UTF-8").status, 201u);
}

// Issue: error bodies carried the client's bytes raw (a query parameter named with
// bytes 0xFF 0xFE), so they were not valid JSON.
TEST_F(ServerTest, ErrorBodiesAreValidJsonWhateverTheInput) {
  const HttpResponse r = admin_get("/v1/events?\xFF\xFE=1");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(error_code(r), "invalid_field") << r.body;  // parsed: the body is JSON
  EXPECT_NE(text_field(r.body, "/error/message"), "<missing>");
  const HttpResponse field = admin_post(
      "/v1/accounts", "{\"" + std::string(63, 'a') + "\xC3\xA9\":1,\"currency\":\"USD\"}");
  EXPECT_EQ(field.status, 400u);
  EXPECT_EQ(error_code(field), "unknown_field") << field.body;
}

// Issue: a JWT's nbf was ignored and an exp of 2^62 accepted.
TEST_F(ServerTest, TokensHonourNbfAndIatAndLiveBoundedly) {
  const MerchantKeys m = merchant("Shop");
  const long now = static_cast<long>(std::time(nullptr));
  const auto status = [&](long exp, std::vector<std::pair<std::string, long>> more = {}) {
    const std::string token = testing::make_jwt(m.id, m.secret, exp, JWT_ALG_HS256, more);
    return client_->request("GET", "/v1/merchants/" + m.id, {"Authorization: Bearer " + token});
  };
  EXPECT_EQ(status(now + 3600).status, 200u);
  EXPECT_EQ(status(now + 3600, {{"iat", now}, {"nbf", now - 5}}).status, 200u);
  const HttpResponse early = status(now + 3600, {{"nbf", now + 600}});
  EXPECT_EQ(early.status, 401u);
  EXPECT_EQ(error_code(early), "invalid_token");
  EXPECT_EQ(status(now + 3600, {{"iat", now + 600}}).status, 401u);
  const HttpResponse forever = status(now + 365L * 24 * 3600);
  EXPECT_EQ(forever.status, 401u);
  EXPECT_NE(text_field(forever.body, "/error/message").find("lives longer"), std::string::npos);
  EXPECT_EQ(status(now + 5 * 3600, {{"iat", now - 2 * 3600}}).status, 401u);  // 7 h lifetime
}

// Issue: replaying the onboarding request's key after a rotation answered the old
// secret, which merchants.json kept in its stored replies.
TEST_F(ServerTest, NoStoredReplyKeepsASecret) {
  const std::string body = R"({"name":"Shop"})";
  const HttpResponse made = admin_post("/v1/merchants", body, {"Idempotency-Key: onboard"});
  ASSERT_EQ(made.status, 201u) << made.body;
  const std::string secret = text_field(made.body, "/secret");
  const std::string id = text_field(made.body, "/id");
  ASSERT_EQ(secret.substr(0, 3), "sk_");
  // A replay answers the merchant, without its secret (shown once).
  const HttpResponse again = admin_post("/v1/merchants", body, {"Idempotency-Key: onboard"});
  EXPECT_EQ(again.status, 201u);
  EXPECT_EQ(text_field(again.body, "/id"), id);
  EXPECT_EQ(text_field(again.body, "/secret"), "<missing>");
  // (Without grace: the old secret is dropped at once.)
  const std::string rotation = R"({"grace_period_s":0})";
  const HttpResponse rotated =
      admin_post("/v1/merchants/" + id + "/keys", rotation, {"Idempotency-Key: rotate"});
  ASSERT_EQ(rotated.status, 201u);
  EXPECT_NE(text_field(rotated.body, "/secret"), secret);
  EXPECT_EQ(
      text_field(
          admin_post("/v1/merchants/" + id + "/keys", rotation, {"Idempotency-Key: rotate"}).body,
          "/secret"),
      "<missing>");
  // The old secret is nowhere on disk; the current one only where it must be.
  const std::string file = [&] {
    std::ifstream in(dir_.path() / "data" / "merchants.json");
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }();
  EXPECT_EQ(file.find(secret), std::string::npos);
  EXPECT_EQ(file.find("\"secret\":\"" + text_field(rotated.body, "/secret")),
            file.rfind("\"secret\":\"" + text_field(rotated.body, "/secret")));  // once
  restart();
  EXPECT_EQ(
      text_field(admin_post("/v1/merchants", body, {"Idempotency-Key: onboard"}).body, "/secret"),
      "<missing>");
  // A file an older paygate wrote, a secret in a stored reply: scrubbed at start.
  ASSERT_EQ(server_.stop(), 0);
  const std::filesystem::path path = dir_.path() / "data" / "merchants.json";
  std::string old = [&] {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }();
  const std::string marker = "\\\"created_at\\\"";  // \"created_at\" inside a body
  const std::size_t at = old.find(marker);
  ASSERT_NE(at, std::string::npos) << old;
  old.insert(at, "\\\"secret\\\":\\\"sk_leaked\\\",");
  std::ofstream(path) << old;
  start();
  std::ifstream in(path);
  const std::string scrubbed((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(scrubbed.find("sk_leaked"), std::string::npos);
}

// Issue: failed authentication was not rate-limited (a key or token could be guessed
// at full speed), nor were operators.
class TightLimitsTest : public ServerTest {
 protected:
  void SetUp() override {
    start(
        "[limits]\nauth_failure_burst = 5\nauth_failure_rate_per_s = 0.001\n"
        "operator_rate_burst = 30\noperator_rate_per_s = 0.001\n");
  }
};

TEST_F(TightLimitsTest, FailedAuthenticationAndOperatorsAreLimited) {
  for (int i = 0; i < 5; ++i) {
    const HttpResponse bad = client_->request("GET", "/v1/events", {"Authorization: Bearer wrong"});
    ASSERT_EQ(bad.status, 401u) << i;
  }
  // The address is now turned away before its credentials are looked at, good ones too.
  const HttpResponse limited =
      client_->request("GET", "/v1/events", {"Authorization: Bearer wrong"});
  EXPECT_EQ(limited.status, 429u);
  EXPECT_EQ(error_code(limited), "rate_limited");
  EXPECT_FALSE(limited.header("retry-after").empty());
  EXPECT_EQ(admin_get("/v1/events").status, 429u);
  // One line for the burst, naming the address.
  const std::string log = server_.log();
  EXPECT_NE(log.find("event=auth_failures_limited client=127.0.0.1"), std::string::npos);
  EXPECT_EQ(log.find("event=auth_failures_limited"), log.rfind("event=auth_failures_limited"));
  const std::string metrics = client_->request("GET", "/metrics").body;
  EXPECT_NE(metrics.find("paygate_auth_failures_limited_total 2"), std::string::npos);
  // Health and metrics need no credentials and stay open.
  EXPECT_EQ(client_->request("GET", "/healthz").status, 200u);
}

TEST_F(TightLimitsTest, OperatorsHaveABucketToo) {
  int ok = 0, limited = 0;
  for (int i = 0; i < 40; ++i) {
    const unsigned status = admin_get("/v1/events").status;
    ok += status == 200u;
    limited += status == 429u;
  }
  EXPECT_EQ(ok, 30);
  EXPECT_EQ(limited, 10);
}

u64 resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Issue: 64 pipelined GET /metrics left ~2 MB held per connection, and 40 connections
// that never read their answers grew the server by 255 MB. Large buffers are now freed
// once used, and what waits for a client is capped.
class EightGroupServerTest : public ServerTest {
 protected:
  void SetUp() override {
    extra_args_ = {"--groups", "8"};  // a /metrics page of production size (~60 KB)
    start();
  }
};

TEST_F(EightGroupServerTest, ConnectionsThatNeverReadHoldBoundedMemory) {
  const u64 page = admin_get("/metrics").body.size();
  const u64 before = resident_bytes(server_.pid());
  ASSERT_GT(before, 0u);
  std::vector<std::unique_ptr<HttpClient>> stuck;
  std::string requests;
  for (int r = 0; r < 64; ++r)
    requests += "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int c = 0; c < 40; ++c) {
    stuck.push_back(std::make_unique<HttpClient>("127.0.0.1", server_.port()));
    ASSERT_TRUE(stuck.back()->send_raw(requests));
  }
  // The server answers what it takes at once; wait (bounded) until its memory settles.
  u64 after = resident_bytes(server_.pid());
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const u64 now = resident_bytes(server_.pid());
    if (now == after && i > 10) break;
    after = now;
  }
  const u64 grown = after > before ? after - before : 0;
  std::printf("40 connections x 64 pipelined /metrics (%llu bytes each): +%.1f MB resident\n",
              static_cast<unsigned long long>(page), static_cast<double>(grown) / 1e6);
  // The server still serves others.
  EXPECT_EQ(client_->request("GET", "/healthz").status, 200u);
  // What it keeps for them unread, by its own count (whatever the machine's load): at
  // most a megabyte and one answer per connection, as each stops taking requests
  // there. (Here loopback's socket buffers usually take every answer, and it is 0.)
  const u64 unread = metric("paygate_http_answers_unread_bytes");
  EXPECT_LE(unread, 40u * ((1u << 20) + 2 * page)) << unread;
  // Sanitizers keep their own allocators: ASan holds freed blocks in a quarantine, TSan
  // delays reuse and shadows every byte. Resident size then measures the sanitizer.
  if constexpr (kSanitized) {
    GTEST_SKIP() << "memory bound not checked under a sanitizer (its allocator keeps freed "
                    "memory resident); the g++ stage checks it";
  }
  // Resident size: on a quiet machine 28-41 MB (133 MB before large buffers were freed
  // once used); with both cores busy, 60-120 MB was seen (the test command runs tests
  // two at a time, and this once failed a 2 MiB-a-connection bound there). Loose, then:
  // it catches growth past 4 MiB a connection, not the allocator's moods.
  EXPECT_LT(grown, 40u * (4u << 20)) << "grew " << grown << " bytes";
}

mode_t mode_of(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Issue: the data directory was 0755 and journals 0644, so anyone on the host read every
// balance; the generated admin token went to stdout, which ends up in log files.
TEST_F(ServerTest, DataIsTheServersAloneAndTheTokenIsNotPrinted) {
  const std::filesystem::path data = dir_.path() / "data";
  fund(system_account(), account(merchant("Shop")), 5);  // something in the journal
  EXPECT_EQ(mode_of(data), 0700u);
  EXPECT_EQ(mode_of(data / "group-0000"), 0700u);
  for (const char* file : {"admin_token", "server_key", "merchants.json", "group-0000/LOCK"}) {
    EXPECT_EQ(mode_of(data / file), 0600u) << file;
  }
  u32 segments = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data / "group-0000")) {
    if (entry.path().extension() != ".seg") continue;
    ++segments;
    EXPECT_EQ(mode_of(entry.path()), 0600u) << entry.path();
  }
  EXPECT_GE(segments, 1u);
  // The token is in its file, and nowhere in what the server printed.
  const std::string log = server_.log();
  EXPECT_EQ(log.find(server_.admin_token()), std::string::npos);
  EXPECT_NE(log.find("admin token is in"), std::string::npos);
  // A data directory that others may write to is refused.
  ASSERT_EQ(server_.stop(), 0);
  ASSERT_EQ(::chmod(data.c_str(), 0777), 0);
  EXPECT_FALSE(server_.start(data, test_config({})));
  EXPECT_NE(server_.log().find("writable by others"), std::string::npos);
  // One that others may only read (an older server made it 0755) is tightened.
  ASSERT_EQ(::chmod(data.c_str(), 0755), 0);
  start();
  EXPECT_EQ(mode_of(data), 0700u);
}

}  // namespace
}  // namespace paygate::api
