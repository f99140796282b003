#include "api/request_decoder.h"

#include <gtest/gtest.h>

#include <string>

#include "api/id_text.h"

namespace paygate::api {
namespace {

const std::string kDebit = id_text(IdKind::account, 0x10);
const std::string kCredit = id_text(IdKind::account, 0x20);
const std::string kHold = id_text(IdKind::transfer, 0x30);

std::string transfer_fields(const std::string& extra = "") {
  return R"("debit_account":")" + kDebit + R"(","credit_account":")" + kCredit +
         R"(","amount":5,"currency":"USD")" + extra;
}

std::string batch_of(const std::string& operation) {
  return R"({"operations":[)" + operation + "]}";
}

TEST(RequestDecoder, EveryTransferFieldIsRead) {
  RequestDecoder decoder;
  TransferCreate t;
  const Problem p = decoder.transfer_create(
      "{" + transfer_fields(
                R"(,"pending":true,"timeout_s":60,"reference":"r-1","metadata":{"a": 1}})"),
      &t);
  ASSERT_TRUE(p.ok()) << p.message;
  EXPECT_EQ(t.debit_account_id, 0x10u);
  EXPECT_EQ(t.credit_account_id, 0x20u);
  EXPECT_EQ(t.amount, 5u);
  EXPECT_EQ(t.currency.letters(), "USD");
  EXPECT_TRUE(t.pending);
  EXPECT_EQ(t.timeout_s, 60u);
  EXPECT_EQ(t.reference, "r-1");
  EXPECT_EQ(t.metadata, R"({"a":1})");
}

// Names of the right length that are not fields, and fields of the other routes.
TEST(RequestDecoder, NearMissesAndForeignFieldsAreUnknown) {
  RequestDecoder decoder;
  TransferCreate t;
  for (const char* name : {"op", "amounr", "Amount", "pendinG", "currencY", "metadat_", "timeout_S",
                           "referencE", "debit_accounT", "credit_accounT", "transfer_id", "x"}) {
    const Problem p =
        decoder.transfer_create("{" + transfer_fields(",\"" + std::string(name) + "\":1}"), &t);
    EXPECT_EQ(p.code, ResultCode::unknown_field) << name;
  }
  BatchRequest batch;
  const Problem in_batch = decoder.batch(
      batch_of(R"({"op":"transfer",)" + transfer_fields(R"(,"transfer_id":")" + kHold + "\"}")),
      &batch);
  EXPECT_EQ(in_batch.code, ResultCode::unknown_field);
  const Problem post_with_transfer_field = decoder.batch(
      batch_of(R"({"op":"post","transfer_id":")" + kHold + R"(","currency":"USD"})"), &batch);
  EXPECT_EQ(post_with_transfer_field.code, ResultCode::unknown_field);
}

TEST(RequestDecoder, RepeatedAndMissingFieldsAreRefused) {
  RequestDecoder decoder;
  TransferCreate t;
  EXPECT_EQ(decoder.transfer_create("{" + transfer_fields(R"(,"amount":6})"), &t).code,
            ResultCode::invalid_field);
  EXPECT_EQ(decoder.transfer_create(R"({"amount":6,"currency":"USD"})", &t).code,
            ResultCode::missing_field);
  BatchRequest batch;
  EXPECT_EQ(
      decoder
          .batch(batch_of(R"({"op":"transfer",)" + transfer_fields(R"(,"op":"transfer"})")), &batch)
          .code,
      ResultCode::invalid_field);
}

// The op may come anywhere in the operation; the first one decides.
TEST(RequestDecoder, TheOpIsFoundWhereverItIs) {
  RequestDecoder decoder;
  BatchRequest batch;
  Problem p = decoder.batch(
      batch_of("{" + transfer_fields(R"(,"op":"transfer"},{"transfer_id":")") + kHold +
               R"(","amount":2,"op":"post"},{"transfer_id":")" + kHold + R"(","op":"void"})"),
      &batch);
  ASSERT_TRUE(p.ok()) << p.message;
  ASSERT_EQ(batch.count, 3u);
  EXPECT_EQ(batch.operations[0].op, BatchOp::transfer);
  EXPECT_EQ(batch.operations[0].transfer.amount, 5u);
  EXPECT_EQ(batch.operations[1].op, BatchOp::post);
  EXPECT_EQ(batch.operations[1].transfer_id, 0x30u);
  EXPECT_EQ(batch.operations[1].amount, 2u);
  EXPECT_EQ(batch.operations[2].op, BatchOp::void_);
  for (const std::string& operation :
       {"{" + transfer_fields("}"), R"({"op":"refund",)" + transfer_fields("}"),
        R"({"op":7,)" + transfer_fields("}"), R"({"op":"Transfer",)" + transfer_fields("}")}) {
    EXPECT_EQ(decoder.batch(batch_of(operation), &batch).code, ResultCode::invalid_field)
        << operation;
  }
  EXPECT_EQ(
      decoder
          .batch(batch_of(R"({"op":"void","transfer_id":")" + kHold + R"(","amount":2})"), &batch)
          .code,
      ResultCode::unknown_field);
}

// Operations are decoded into the same vector request after request: nothing of an
// earlier request may show through in a later one.
TEST(RequestDecoder, ABatchLeavesNothingForTheNext) {
  RequestDecoder decoder;
  BatchRequest batch;
  ASSERT_TRUE(decoder
                  .batch(batch_of(R"({"op":"transfer",)" +
                                  transfer_fields(R"(,"pending":true,"timeout_s":9,)"
                                                  R"("reference":"r","metadata":{"k":"v"}})")),
                         &batch)
                  .ok());
  ASSERT_TRUE(decoder.batch(batch_of(R"({"op":"transfer",)" + transfer_fields("}")), &batch).ok());
  RequestDecoder fresh_decoder;
  BatchRequest fresh;
  ASSERT_TRUE(
      fresh_decoder.batch(batch_of(R"({"op":"transfer",)" + transfer_fields("}")), &fresh).ok());
  const TransferCreate& reused = batch.operations[0].transfer;
  const TransferCreate& expected = fresh.operations[0].transfer;
  EXPECT_FALSE(reused.pending);
  EXPECT_EQ(reused.timeout_s, 0u);
  EXPECT_EQ(reused.reference, "");
  EXPECT_EQ(reused.metadata, "");
  EXPECT_EQ(reused.extra_hash, expected.extra_hash);
  EXPECT_EQ(reused.currency.code, expected.currency.code);

  TransferCreate t;
  ASSERT_TRUE(
      decoder.transfer_create("{" + transfer_fields(R"(,"pending":true,"reference":"x"})"), &t)
          .ok());
  ASSERT_TRUE(decoder.transfer_create("{" + transfer_fields("}"), &t).ok());
  EXPECT_FALSE(t.pending);
  EXPECT_EQ(t.reference, "");
  EXPECT_EQ(t.extra_hash, expected.extra_hash);
}

}  // namespace
}  // namespace paygate::api
