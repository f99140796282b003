#include "base/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace paygate {
namespace {

TEST(Status, OkIsAnEmptyPointerAndSaysSo) {
  const Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.code(), StatusCode::ok);
  EXPECT_EQ(ok.message(), "");
  EXPECT_EQ(ok.to_string(), "ok");
  EXPECT_TRUE(Status::success().ok());
  static_assert(sizeof(Status) == sizeof(void*), "ok costs one pointer");
}

TEST(Status, FactoriesCarryTheirCodeAndMessage) {
  const Status s = Status::corruption("journal corrupt in x at offset 8");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::corruption);
  EXPECT_EQ(s.message(), "journal corrupt in x at offset 8");
  EXPECT_EQ(s.to_string(), "corruption: journal corrupt in x at offset 8");
  EXPECT_EQ(Status::io_error("a").code(), StatusCode::io_error);
  EXPECT_EQ(Status::invalid_config("a").code(), StatusCode::invalid_config);
  EXPECT_EQ(Status::not_found("a").code(), StatusCode::not_found);
  EXPECT_EQ(Status::busy("a").code(), StatusCode::busy);
  const Status copy = s;  // copies its failure
  EXPECT_EQ(copy.to_string(), s.to_string());
  EXPECT_EQ(s.with_context("group 2").message(), "group 2: journal corrupt in x at offset 8");
  EXPECT_TRUE(Status().with_context("group 2").ok());
}

TEST(Result, HoldsAValueOrWhyNot) {
  Result<std::unique_ptr<int>> good(std::make_unique<int>(7));
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(good.status().ok());
  EXPECT_EQ(*good.value(), 7);
  const std::unique_ptr<int> taken = std::move(good).value();
  EXPECT_EQ(*taken, 7);
  const Result<int> bad(Status::not_found("no such file"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::not_found);
}

}  // namespace
}  // namespace paygate
