#include "api/json_writer.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace paygate::api {
namespace {

TEST(JsonWriter, WritesObjectsArraysAndSeparators) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("a").number(-5).key("b").begin_array();
  w.unsigned_number(18446744073709551615ull).boolean(true).null().end_array();
  w.key("c").begin_object().end_object().end_object();
  EXPECT_EQ(out, R"({"a":-5,"b":[18446744073709551615,true,null],"c":{}})");
}

TEST(JsonWriter, EscapesQuotesBackslashesAndControlCharacters) {
  std::string out;
  JsonWriter w(out);
  w.begin_array();
  w.string("plain");
  w.string("say \"hi\"\\now");
  w.string(std::string_view("\x01tab\there\nend\x1f\0", 15));  // NUL too
  w.string("");
  w.string("\"");
  w.string("caf\xc3\xa9");  // UTF-8 passes through as it is
  w.end_array();
  EXPECT_EQ(out, R"(["plain","say \"hi\"\\now","\u0001tab\u0009here\u000aend\u001f\u0000","","\"",)"
                 "\"caf\xc3\xa9\"]");
}

// Issue: error bodies echoed a client's bytes raw, so some were not valid JSON text.
TEST(JsonWriter, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  const auto written = [](std::string_view text) {
    std::string out;
    JsonWriter(out).string(text);
    return out;
  };
  const std::string kReplacement = "\xEF\xBF\xBD";
  EXPECT_EQ(written("\xFF\xFE"), "\"" + kReplacement + kReplacement + "\"");
  EXPECT_EQ(written("ab\xC3"), "\"ab" + kReplacement + "\"");                 // cut mid-character
  EXPECT_EQ(written("\xC0\xAF"), "\"" + kReplacement + kReplacement + "\"");  // overlong
  EXPECT_EQ(written("\xED\xA0\x80"), "\"" + kReplacement + kReplacement + kReplacement + "\"");
  EXPECT_EQ(written("\xF4\x90\x80\x80").substr(1, 3), kReplacement);  // past U+10FFFF
  // Well-formed sequences of every length pass through.
  EXPECT_EQ(written("\x7F\xC2\x80\xE2\x82\xAC\xF0\x9F\x92\xB3"),
            "\"\x7F\xC2\x80\xE2\x82\xAC\xF0\x9F\x92\xB3\"");
  // Random bytes: what comes out is always well-formed UTF-8 between its quotes.
  std::mt19937_64 random(11);
  for (int n = 0; n < 20000; ++n) {
    std::string text(random() % 12, '\0');
    for (char& c : text)
      c = static_cast<char>(random());
    const std::string out = written(text);
    for (std::size_t i = 1; i + 1 < out.size();) {
      const auto byte = static_cast<unsigned char>(out[i]);
      if (byte < 0x80) {
        ++i;
        continue;
      }
      const std::size_t length = JsonWriter::utf8_length(out, i);
      ASSERT_NE(length, 0u) << "at " << i;
      i += length;
    }
  }
}

TEST(JsonWriter, WritesIdsAsQuotedText) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("id").id(IdKind::account, 0x0123456789abcdefull).end_object();
  EXPECT_EQ(out, R"({"id":"acc_0123456789abcdef"})");
}

// The branch-free hex against the obvious loop, over the digits' every value and
// random ids; and back through parse_id.
TEST(JsonWriter, IdTextMatchesPlainHexAndParsesBack) {
  const auto plain = [](IdKind kind, u64 id) {
    std::string text(id_prefix_text(kind));
    for (int shift = 60; shift >= 0; shift -= 4)
      text += "0123456789abcdef"[(id >> shift) & 0xF];
    return text;
  };
  std::mt19937_64 random(7);
  std::vector<u64> ids = {1, 0xFFFFFFFFFFFFFFFFull, 0x0123456789ABCDEFull, 0xFEDCBA9876543210ull};
  for (u64 digit = 0; digit < 16; ++digit)
    ids.push_back(digit * 0x1111111111111111ull);
  for (int i = 0; i < 10000; ++i)
    ids.push_back(random());
  for (const u64 id : ids) {
    for (const IdKind kind : {IdKind::merchant, IdKind::account, IdKind::transfer}) {
      ASSERT_EQ(id_text(kind, id), plain(kind, id)) << id;
      if (id != 0) {
        ASSERT_EQ(parse_id(kind, id_text(kind, id)), id) << id;
      }
    }
  }
}

// The branch-free parse against the obvious loop: every byte value at every digit
// position of several ids, and the prefix and the length.
TEST(JsonWriter, ParseIdMatchesThePlainLoopForEveryByte) {
  const auto plain = [](IdKind kind, std::string_view text) -> std::optional<u64> {
    if (text.size() != kIdTextSize || text.substr(0, 4) != id_prefix_text(kind)) return {};
    u64 id = 0;
    for (std::size_t i = 4; i < text.size(); ++i) {
      const char c = text[i];
      const std::size_t digit = std::string_view("0123456789abcdef").find(c);
      if (digit == std::string_view::npos) return {};
      id = id << 4 | digit;
    }
    if (id == 0) return {};
    return id;
  };
  for (const u64 id : {u64{1}, u64{0}, u64{0x0123456789abcdefull}, u64{0xfedcba9876543210ull}}) {
    std::string text = id == 0 ? "acc_0000000000000000" : id_text(IdKind::account, id);
    for (std::size_t at = 0; at < kIdTextSize; ++at) {
      const char kept = text[at];
      for (int byte = 0; byte < 256; ++byte) {
        text[at] = static_cast<char>(byte);
        ASSERT_EQ(parse_id(IdKind::account, text), plain(IdKind::account, text))
            << "position " << at << " byte " << byte << " in " << id;
      }
      text[at] = kept;
    }
    EXPECT_EQ(parse_id(IdKind::account, text.substr(0, 19)), std::nullopt);
    EXPECT_EQ(parse_id(IdKind::transfer, text), std::nullopt);
  }
}

TEST(JsonWriter, AppendsToWhatIsThere) {
  std::string out = "x";
  JsonWriter(out).string("y");
  EXPECT_EQ(out, "x\"y\"");
}

}  // namespace
}  // namespace paygate::api
