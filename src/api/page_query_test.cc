#include "api/page_query.h"

#include <gtest/gtest.h>

namespace paygate::api {
namespace {

TEST(PageQuery, DefaultsWithoutAQuery) {
  PageQuery q;
  ASSERT_TRUE(parse_page_query("/v1/events", PageRoute::events, &q).ok());
  EXPECT_EQ(q.limit, kPageDefault);
  EXPECT_FALSE(q.group || q.cursor);
  ASSERT_TRUE(parse_page_query("/v1/events?", PageRoute::events, &q).ok());
  ASSERT_TRUE(parse_page_query("/v1/events?&limit=5&", PageRoute::events, &q).ok());
  EXPECT_EQ(q.limit, 5u);
}

TEST(PageQuery, ReadsEveryParameterOfEachRoute) {
  PageQuery q;
  ASSERT_TRUE(
      parse_page_query("/v1/events?group=3&after=3.120.2&limit=1000", PageRoute::events, &q).ok());
  EXPECT_EQ(q.limit, 1000u);
  EXPECT_EQ(q.group, 3u);
  EXPECT_EQ(q.cursor, (Cursor{3, EventKey{120, 2}}));
  ASSERT_TRUE(parse_page_query("/v1/accounts/acc_1/entries?limit=1&cursor=0.18446744073709551615.7",
                               PageRoute::entries, &q)
                  .ok());
  EXPECT_EQ(q.limit, 1u);
  EXPECT_EQ(q.cursor, (Cursor{0, EventKey{~u64{0}, 7}}));
}

TEST(PageQuery, CursorsRoundTrip) {
  const Cursor cursor{4095, EventKey{1234567890123, 65537}};
  EXPECT_EQ(cursor_text(cursor), "4095.1234567890123.65537");
  EXPECT_EQ(parse_cursor(cursor_text(cursor)), cursor);
}

TEST(PageQuery, RefusesWhatItDoesNotUnderstand) {
  struct Case {
    const char* target;
    PageRoute route;
    ResultCode code;
  };
  const Case cases[] = {
      {"/v1/events?limit=0", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=1001", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=-1", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=+5", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=5x", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=5&limit=6", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?limit=99999999999999999999999", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?group=4096", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?group=1&group=1", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?after=1.2", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=1.2.3.4", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=1..3", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=a.2.3", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=1.2.4294967296", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=1%2E2%2E3", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?after=1.2.3&after=1.2.3", PageRoute::events, ResultCode::invalid_cursor},
      {"/v1/events?cursor=1.2.3", PageRoute::events, ResultCode::invalid_field},
      {"/v1/events?Limit=5", PageRoute::events, ResultCode::invalid_field},
      {"/v1/accounts/x/entries?after=1.2.3", PageRoute::entries, ResultCode::invalid_field},
      {"/v1/accounts/x/entries?group=1", PageRoute::entries, ResultCode::invalid_field},
  };
  for (const Case& c : cases) {
    PageQuery q;
    const Problem problem = parse_page_query(c.target, c.route, &q);
    EXPECT_EQ(problem.code, c.code) << c.target << ": " << problem.message;
    EXPECT_FALSE(problem.message.empty()) << c.target;
  }
}

}  // namespace
}  // namespace paygate::api
