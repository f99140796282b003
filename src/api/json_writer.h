// Writes JSON into a caller's reusable buffer: no allocation once the buffer has
// grown to its working size. Only what the API's responses need.
#pragma once

#include <charconv>
#include <cstring>
#include <string>
#include <string_view>

#include "api/id_text.h"
#include "base/types.h"

namespace paygate::api {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) noexcept : out_(out) {}

  JsonWriter& begin_object() {
    separate();
    out_ += '{';
    first_ = true;
    return *this;
  }
  JsonWriter& end_object() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  JsonWriter& begin_array() {
    separate();
    out_ += '[';
    first_ = true;
    return *this;
  }
  JsonWriter& end_array() {
    out_ += ']';
    first_ = false;
    return *this;
  }
  JsonWriter& key(std::string_view name) {
    separate();
    out_ += '"';
    out_ += name;  // keys are our own constants: nothing to escape
    out_ += "\":";
    first_ = true;  // the value follows without a comma
    return *this;
  }
  JsonWriter& string(std::string_view text) {
    separate();
    append_escaped(text);
    return *this;
  }
  JsonWriter& id(IdKind kind, u64 value) {
    separate();
    char text[kIdTextSize];
    format_id(kind, value, text);
    char quoted[kIdTextSize + 2];
    quoted[0] = '"';
    std::memcpy(quoted + 1, text, kIdTextSize);
    quoted[kIdTextSize + 1] = '"';
    out_.append(quoted, sizeof quoted);
    return *this;
  }
  JsonWriter& number(i64 value) {
    separate();
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out_.append(digits, end);
    return *this;
  }
  JsonWriter& unsigned_number(u64 value) {
    separate();
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out_.append(digits, end);
    return *this;
  }
  JsonWriter& boolean(bool value) {
    separate();
    out_ += value ? "true" : "false";
    return *this;
  }
  JsonWriter& null() {
    separate();
    out_ += "null";
    return *this;
  }
  // Already valid JSON (e.g. metadata re-serialised by the parser).
  JsonWriter& raw(std::string_view json) {
    separate();
    out_ += json;
    return *this;
  }

  // As a JSON string: quotes, backslashes and control characters escaped, and bytes
  // that are not UTF-8 (an error message may echo a client's bytes: a query parameter
  // name of 0xFF 0xFE, a field name cut mid-character) replaced by U+FFFD, so that
  // every answer is valid JSON text.
  void append_escaped(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    out_ += '"';
    std::size_t run = 0;  // the start of the characters that need no escape
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      const auto byte = static_cast<unsigned char>(c);
      if (byte >= 0x80) {
        const std::size_t length = utf8_length(text, i);
        if (length != 0) {
          i += length - 1;
          continue;
        }
        out_.append(text.data() + run, i - run);
        out_ += "\xEF\xBF\xBD";  // U+FFFD, the replacement character
        run = i + 1;
        continue;
      }
      if (c != '"' && c != '\\' && byte >= 0x20) continue;
      out_.append(text.data() + run, i - run);
      run = i + 1;
      if (byte < 0x20) {
        const char escape[] = {'\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xF]};
        out_.append(escape, sizeof escape);
      } else {
        const char escape[] = {'\\', c};
        out_.append(escape, sizeof escape);
      }
    }
    out_.append(text.data() + run, text.size() - run);
    out_ += '"';
  }

  // The length of the well-formed UTF-8 sequence at text[i] (RFC 3629: no overlong
  // forms, no surrogates, nothing past U+10FFFF), or 0.
  static std::size_t utf8_length(std::string_view text, std::size_t i) noexcept {
    const auto at = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char lead = at(i);
    std::size_t length = 0;
    unsigned char low = 0x80, high = 0xBF;  // the range of the byte after the lead
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // past U+10FFFF
    } else {
      return 0;
    }
    if (i + length > text.size()) return 0;
    if (at(i + 1) < low || at(i + 1) > high) return 0;
    for (std::size_t k = 2; k < length; ++k) {
      if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
    }
    return length;
  }

 private:
  void separate() {
    if (!first_) out_ += ',';
    first_ = false;
  }

  std::string& out_;
  bool first_ = true;
};

}  // namespace paygate::api
