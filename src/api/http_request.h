// The HTTP request as the server parses it: Beast's parser over a RequestArena (its
// fields and body allocate nothing from the heap once warm), and the headers the
// service reads, taken from it in one pass. Shared by the server and the fuzz target,
// so what is fuzzed is what runs.
#pragma once

#include <boost/beast/http.hpp>

#include <string_view>
#include <type_traits>

#include "api/request_arena.h"
#include "api/service.h"

namespace paygate::api {

namespace http = boost::beast::http;

// A request's fields and body live in its slot's arena (request_arena.h).
using ArenaFields = http::basic_fields<ArenaAllocator<char>>;
using ArenaBody = http::basic_string_body<char, std::char_traits<char>, ArenaAllocator<char>>;
using RequestParser = http::request_parser<ArenaBody, ArenaAllocator<char>>;
static_assert(std::is_same_v<RequestParser::value_type, http::request<ArenaBody, ArenaFields>>);

inline std::string_view view_of(boost::beast::string_view text) {
  return std::string_view(text.data(), text.size());
}

// The headers the service reads, in one pass over the request's fields rather than a
// lookup for each. Of a repeated header the first counts, as find() would give.
inline void read_headers(const RequestParser::value_type& request, HttpRequestView* view) {
  std::string_view* const wanted[] = {
      &view->content_type, &view->authorization, &view->prefer,   &view->idempotency_key,
      &view->key_id,       &view->timestamp,     &view->signature};
  constexpr u32 kNone = sizeof wanted / sizeof wanted[0];
  u32 seen = 0;
  for (const auto& f : request) {
    u32 which = kNone;
    switch (f.name()) {
      case http::field::content_type:
        which = 0;
        break;
      case http::field::authorization:
        which = 1;
        break;
      case http::field::prefer:
        which = 2;
        break;
      case http::field::unknown: {
        const boost::beast::string_view name = f.name_string();
        if (boost::beast::iequals(name, "Idempotency-Key")) which = 3;
        if (boost::beast::iequals(name, "X-Paygate-Key")) which = 4;
        if (boost::beast::iequals(name, "X-Paygate-Timestamp")) which = 5;
        if (boost::beast::iequals(name, "X-Paygate-Signature")) which = 6;
        break;
      }
      default:
        break;
    }
    if (which == kNone || (seen & (1u << which))) continue;
    seen |= 1u << which;
    *wanted[which] = view_of(f.value());
    if (which == 3) view->idempotency_key_sent = true;
  }
}

// Why a request's framing cannot be trusted (RFC 9112, 6.1 and 6.3), or null. A
// body whose length the server and a proxy in front of it could read differently is
// how requests are smuggled: the bytes one takes as a body the other takes as the
// next request. So a Transfer-Encoding other than exactly "chunked", a
// Transfer-Encoding in HTTP/1.0, more than one, or one beside a Content-Length are
// refused with 400 and the connection closed, never guessed at.
inline const char* framing_problem(const RequestParser::value_type& request) {
  u32 encodings = 0;
  bool chunked = false;
  for (const auto& field : request) {
    if (field.name() != http::field::transfer_encoding) continue;
    ++encodings;
    std::string_view value = view_of(field.value());
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
      value.remove_suffix(1);
    chunked =
        boost::beast::iequals(boost::beast::string_view(value.data(), value.size()), "chunked");
  }
  if (encodings == 0) return nullptr;
  if (request.version() < 11) return "Transfer-Encoding is not allowed in HTTP/1.0";
  if (encodings > 1 || !chunked) return "Transfer-Encoding must be exactly \"chunked\"";
  if (request.find(http::field::content_length) != request.end()) {
    return "Transfer-Encoding and Content-Length together";
  }
  return nullptr;
}

}  // namespace paygate::api
