#include "api/json_writer.h"

#include <gtest/gtest.h>

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

TEST(JsonWriter, WritesIdsAsQuotedText) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("id").id(IdKind::account, 0x0123456789abcdefull).end_object();
  EXPECT_EQ(out, R"({"id":"acc_0123456789abcdef"})");
}

TEST(JsonWriter, AppendsToWhatIsThere) {
  std::string out = "x";
  JsonWriter(out).string("y");
  EXPECT_EQ(out, "x\"y\"");
}

}  // namespace
}  // namespace paygate::api
