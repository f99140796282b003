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
  EXPECT_EQ(q.min_sequence, std::nullopt);
  for (const PageRoute route : {PageRoute::events, PageRoute::entries}) {
    ASSERT_TRUE(parse_page_query("/v1/x?min_sequence=42", route, &q).ok());
    EXPECT_EQ(q.min_sequence, 42u);
  }
}

// GET of one object: min_sequence and nothing else.
TEST(ReadQuery, TakesMinSequenceOnly) {
  std::optional<u64> min_sequence = 7;
  ASSERT_TRUE(parse_read_query("/v1/orders/ord_1", &min_sequence).ok());
  EXPECT_EQ(min_sequence, std::nullopt);
  ASSERT_TRUE(
      parse_read_query("/v1/orders/ord_1?min_sequence=9223372036854775807", &min_sequence).ok());
  EXPECT_EQ(min_sequence, 9223372036854775807u);
  for (const char* target :
       {"/v1/transfers/t?min_sequence=", "/v1/transfers/t?min_sequence=x",
        "/v1/transfers/t?min_sequence=-1", "/v1/transfers/t?min_sequence=9223372036854775808",
        "/v1/transfers/t?min_sequence=1&min_sequence=1", "/v1/transfers/t?limit=1",
        "/v1/transfers/t?min_sequence"}) {
    const Problem problem = parse_read_query(target, &min_sequence);
    EXPECT_EQ(problem.code, ResultCode::invalid_field) << target;
    EXPECT_FALSE(problem.message.empty()) << target;
  }
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
      {"/v1/events?min_sequence=1&min_sequence=2", PageRoute::events, ResultCode::invalid_field},
      {"/v1/accounts/x/entries?min_sequence=a", PageRoute::entries, ResultCode::invalid_field},
  };
  for (const Case& c : cases) {
    PageQuery q;
    const Problem problem = parse_page_query(c.target, c.route, &q);
    EXPECT_EQ(problem.code, c.code) << c.target << ": " << problem.message;
    EXPECT_FALSE(problem.message.empty()) << c.target;
  }
}

TEST(OrderListQuery, ReadsEveryParameter) {
  OrderListQuery q;
  ASSERT_TRUE(parse_order_list_query("/v1/orders", &q).ok());
  EXPECT_EQ(q.limit, kPageDefault);
  EXPECT_FALSE(q.status || q.created_from_s || q.created_to_s || q.merchant_ref || q.merchant ||
               q.cursor || q.min_sequence || q.attention);
  ASSERT_TRUE(parse_order_list_query("/v1/orders?status=exception_checkout&created_from=10&"
                                     "created_to=20&merchant_ref=a%2Bb+c%25&limit=5&"
                                     "cursor=ord_0001000000000007&merchant=mer_0000000000000003&"
                                     "min_sequence=42&attention=true",
                                     &q)
                  .ok());
  EXPECT_TRUE(q.attention);
  EXPECT_EQ(q.status, OrderStatus::exception_checkout);
  EXPECT_EQ(q.created_from_s, 10u);
  EXPECT_EQ(q.created_to_s, 20u);
  EXPECT_EQ(q.merchant_ref, "a+b c%");
  EXPECT_EQ(q.limit, 5u);
  EXPECT_EQ(q.cursor, 0x0001000000000007u);
  EXPECT_EQ(q.merchant, 3u);
  EXPECT_EQ(q.min_sequence, 42u);
}

TEST(OrderListQuery, RefusesWhatItDoesNotUnderstand) {
  for (const char* target :
       {"/v1/orders?status=paid", "/v1/orders?status=success&status=failed",
        "/v1/orders?created_from=-1", "/v1/orders?created_to=soon",
        "/v1/orders?merchant_ref=", "/v1/orders?merchant_ref=%zz", "/v1/orders?merchant_ref=%4",
        "/v1/orders?merchant_ref=a%00", "/v1/orders?merchant=acc_0001000000000005",
        "/v1/orders?limit=0", "/v1/orders?limit=101", "/v1/orders?min_sequence=x",
        "/v1/orders?group=1", "/v1/orders?after=0.1.0", "/v1/orders?attention=yes"}) {
    OrderListQuery q;
    const Problem p = parse_order_list_query(target, &q);
    EXPECT_EQ(p.code, ResultCode::invalid_field) << target;
  }
  for (const char* target :
       {"/v1/orders?cursor=0.1.2", "/v1/orders?cursor=acc_0001000000000005",
        "/v1/orders?cursor=ord_0001000000000007&cursor=ord_0001000000000008"}) {
    OrderListQuery q;
    EXPECT_EQ(parse_order_list_query(target, &q).code, ResultCode::invalid_cursor) << target;
  }
}

TEST(DeliveryListQuery, ReadsEveryParameter) {
  DeliveryListQuery q;
  ASSERT_TRUE(parse_delivery_list_query("/v1/webhook_deliveries?endpoint=whe_0000000000000003&"
                                        "status=failed&order=ord_0001000000000007&limit=5&"
                                        "merchant=usr_0000400000000007&cursor=whd_0000000000000009",
                                        &q)
                  .ok());
  EXPECT_EQ(q.endpoint, 3u);
  EXPECT_EQ(q.status, "failed");
  EXPECT_EQ(q.order, 0x0001000000000007u);
  EXPECT_FALSE(q.withdrawal);
  EXPECT_EQ(q.limit, 5u);
  EXPECT_EQ(q.merchant, 0x0000400000000007u);
  EXPECT_EQ(q.cursor, 9u);
  // A withdrawal's deliveries: the same number, of the other kind.
  ASSERT_TRUE(
      parse_delivery_list_query("/v1/webhook_deliveries?withdrawal=wdr_0001000000000007", &q).ok());
  EXPECT_EQ(q.order, 0x0001000000000007u);
  EXPECT_TRUE(q.withdrawal);
}

TEST(DeliveryListQuery, RefusesWhatItDoesNotUnderstand) {
  for (const char* target :
       {"/v1/webhook_deliveries?status=sent", "/v1/webhook_deliveries?order=wdr_0001000000000007",
        "/v1/webhook_deliveries?withdrawal=ord_0001000000000007",
        "/v1/webhook_deliveries?order=ord_0001000000000007&withdrawal=wdr_0001000000000007",
        "/v1/webhook_deliveries?withdrawal=wdr_0001000000000007&order=ord_0001000000000007",
        "/v1/webhook_deliveries?merchant=acc_0001000000000005", "/v1/webhook_deliveries?limit=0",
        "/v1/webhook_deliveries?endpoint=whd_0000000000000003", "/v1/webhook_deliveries?x=1"}) {
    DeliveryListQuery q;
    EXPECT_EQ(parse_delivery_list_query(target, &q).code, ResultCode::invalid_field) << target;
  }
  DeliveryListQuery q;
  EXPECT_EQ(
      parse_delivery_list_query("/v1/webhook_deliveries?cursor=ord_0001000000000007", &q).code,
      ResultCode::invalid_cursor);
}

}  // namespace
}  // namespace paygate::api
