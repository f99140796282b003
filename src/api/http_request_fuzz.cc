// libFuzzer target: bytes → HTTP request (the server's own parser over a reused arena,
// and its header pass) → the JSON decoder for its route, and the paged reads' query parser. Nothing
// may crash or leak, and whatever decodes must satisfy the decoder's promises (positive amounts,
// valid currencies, ...).
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

#include "api/http_request.h"
#include "api/page_query.h"
#include "api/request_decoder.h"
#include "base/ids.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using namespace paygate;
using namespace paygate::api;

void require(bool condition) {
  if (!condition) std::abort();
}

void check_transfer(const TransferCreate& t) {
  require(t.amount > 0 && t.amount <= static_cast<u64>(INT64_MAX));
  require(t.currency.valid());
  require(t.debit_account_id != 0 && t.credit_account_id != 0);
  require(t.debit_account_id != t.credit_account_id);
  require(t.pending || t.timeout_s == 0);
  require(t.reference.size() <= kReferenceBytesMax && t.metadata.size() <= kMetadataBytesMax);
}

// The paged reads' query strings: whatever parses is within bounds, and a cursor
// reads back as the same text it was written as.
void check_page_query(std::string_view target) {
  for (const PageRoute route : {PageRoute::events, PageRoute::entries}) {
    PageQuery q;
    if (!parse_page_query(target, route, &q).ok()) continue;
    require(q.limit >= 1 && q.limit <= kPageMax);
    require(!q.group || (route == PageRoute::events && *q.group <= kGroupMax));
    if (q.cursor) require(parse_cursor(cursor_text(*q.cursor)) == q.cursor);
  }
  std::optional<u64> min_sequence;
  if (parse_read_query(target, &min_sequence).ok()) {
    require(!min_sequence || *min_sequence <= (~u64{0} >> 1));
  }
}

void decode(std::string_view target, std::string_view body) {
  static RequestDecoder decoder;
  if (target.find('?') != std::string_view::npos) check_page_query(target);
  if (target.starts_with("/v1/merchants/") && target.ends_with("/risk")) {
    RiskSet r;
    if (decoder.risk_set(body, &r).ok()) {
      require(r.has_max_amount || r.has_payer_velocity || r.has_blocked_payers);
      require(r.max_amount <= kAmountMax && r.max_checkouts_per_payer_per_minute <= 1'000'000);
      require(r.blocked_payers.size() <= kBlockedPayersMax);
      require(std::adjacent_find(r.blocked_payers.begin(), r.blocked_payers.end(),
                                 std::greater_equal<>()) == r.blocked_payers.end());
    }
  } else if (target.starts_with("/v1/merchants")) {
    MerchantCreate m;
    if (decoder.merchant_create(body, &m).ok()) {
      require(!m.name.empty() && m.name.size() <= kNameBytesMax && m.region <= kRegionMax);
    }
  } else if (target.starts_with("/v1/users")) {
    MerchantCreate m;
    if (decoder.user_create(body, &m).ok()) require(m.name.size() <= kNameBytesMax);
  } else if (target.starts_with("/v1/providers")) {
    MerchantCreate m;
    if (decoder.provider_create(body, &m).ok()) {
      require(!m.name.empty() && m.name.size() <= kNameBytesMax && m.currency.valid());
    }
  } else if (target.starts_with("/v1/orders/") && target.ends_with("/checkout")) {
    OrderStep o;
    if (decoder.order_checkout(body, &o).ok()) require(o.method != 0);
  } else if (target.starts_with("/v1/orders/") && target.ends_with("/refunds")) {
    OrderStep o;
    (void)decoder.order_refund(body, &o);
  } else if (target.starts_with("/v1/orders/") && target.ends_with("/cancel")) {
    (void)decoder.void_pending(body);
  } else if (target.starts_with("/v1/orders/") && target.ends_with("/result")) {
    WithdrawalResult r;
    if (decoder.withdrawal_result(body, &r).ok())
      require(r.provider_ref.size() <= kReferenceBytesMax);
  } else if (target.starts_with("/v1/orders/") && target.ends_with("/resolve")) {
    OrderStep o;
    (void)decoder.order_resolve(body, &o);
  } else if (target.starts_with("/v1/orders")) {
    OrderCreate o;
    if (decoder.order_create(body, &o).ok()) {
      require(!o.merchant_ref.empty() && o.amount >= 1 && o.amount <= kAmountMax &&
              o.currency.valid() && o.expires_in_s >= 1);
    }
  } else if (target.ends_with("/result")) {
    WithdrawalResult r;
    if (decoder.withdrawal_result(body, &r).ok())
      require(r.provider_ref.size() <= kReferenceBytesMax);
  } else if (target.starts_with("/v1/withdrawals")) {
    WithdrawalCreate w;
    if (decoder.withdrawal_create(body, &w).ok()) {
      require(w.account_id != 0 && w.amount >= 1 && w.amount <= kAmountMax && w.currency.valid() &&
              !w.destination.empty() && w.destination.size() <= kReferenceBytesMax &&
              w.timeout_s >= 1);
    }
  } else if (target.starts_with("/v1/accounts")) {
    AccountCreate a;
    if (decoder.account_create(body, &a).ok()) require(a.currency.valid() && valid(a.kind));
  } else if (target.ends_with("/post")) {
    PendingAction p;
    (void)decoder.post_pending(body, &p);
  } else if (target.ends_with("/void")) {
    (void)decoder.void_pending(body);
  } else if (target.starts_with("/v1/batch")) {
    BatchRequest b;
    if (decoder.batch(body, &b).ok()) {
      require(b.count >= 1 && b.count <= kBatchOperationsMax);
      for (u32 i = 0; i < b.count; ++i) {
        const BatchOperation& op = b.operations[i];
        if (op.op == BatchOp::transfer) check_transfer(op.transfer);
        if (op.op != BatchOp::transfer) require(op.transfer_id != 0);
      }
    }
  } else {
    TransferCreate t;
    if (decoder.transfer_create(body, &t).ok()) check_transfer(t);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One arena for every input, reset after each, as a connection's slot reuses its own.
  static RequestArena arena;
  {
    const ArenaAllocator<char> allocator(&arena);
    RequestParser parser(std::piecewise_construct, std::make_tuple(allocator),
                         std::make_tuple(allocator));
    parser.header_limit(16 * 1024);
    parser.body_limit(1 << 20);
    parser.eager(true);
    beast::error_code ec;
    parser.put(boost::asio::buffer(data, size), ec);
    if (!ec && parser.is_header_done()) {
      // The server's framing check, on whatever header the bytes make (it must not
      // crash; an ambiguous one is refused there before its body).
      (void)framing_problem(parser.get());
    }
    if (!ec && parser.is_done() && framing_problem(parser.get()) == nullptr) {
      const auto& request = parser.get();
      HttpRequestView view;
      view.body = request.body();
      read_headers(request, &view);
      require(view.body.size() == request.body().size());
      decode(view_of(request.target()), view.body);
    }
  }
  arena.reset();
  // The body decoders also see the raw bytes, so JSON gets fuzzed without HTTP around it.
  if (size > 0) {
    static constexpr std::string_view kTargets[] = {"/v1/merchants",
                                                    "/v1/accounts",
                                                    "/v1/transfers",
                                                    "/v1/transfers/x/post",
                                                    "/v1/transfers/x/void",
                                                    "/v1/batch",
                                                    "/v1/users",
                                                    "/v1/providers",
                                                    "/v1/withdrawals",
                                                    "/v1/withdrawals/x/result",
                                                    "/v1/orders",
                                                    "/v1/orders/x/checkout",
                                                    "/v1/orders/x/refunds",
                                                    "/v1/orders/x/resolve",
                                                    "/v1/merchants/x/risk"};
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    decode(kTargets[data[0] % std::size(kTargets)], rest);
    check_page_query(std::string("/v1/events?") + std::string(rest));
  }
  return 0;
}
