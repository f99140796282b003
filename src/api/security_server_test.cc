// What each principal may do, against the real server (docs/API.md, "Security
// model"): the rules an adversarial probe of the API checks.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

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
