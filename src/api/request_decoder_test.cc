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

// Texts are journaled as they are: none may hold NUL (a record's length has a zero
// high byte, so without one no text can pass for a record's trailer after a crash).
// In metadata it stays escaped, as JSON writes it.
TEST(RequestDecoder, NoTextHoldsNul) {
  RequestDecoder decoder;
  TransferCreate t;
  const Problem nul = decoder.transfer_create(
      "{" + transfer_fields(R"(,"reference":"8\u0000\u0000\u0000PGRE"})"), &t);
  EXPECT_EQ(nul.code, ResultCode::invalid_field);
  EXPECT_NE(nul.message.find("reference must not contain U+0000"), std::string::npos)
      << nul.message;
  OrderCreate order;
  const Problem in_order = decoder.order_create(
      R"({"merchant_ref":"a","amount":1,"currency":"USD","description":"x\u0000y"})", &order);
  EXPECT_EQ(in_order.code, ResultCode::invalid_field) << in_order.message;
  const Problem escaped =
      decoder.transfer_create("{" + transfer_fields(R"(,"metadata":{"k":"a\u0000b"}})"), &t);
  ASSERT_TRUE(escaped.ok()) << escaped.message;
  EXPECT_EQ(t.metadata.find('\0'), std::string::npos) << t.metadata;
  EXPECT_EQ(t.metadata, R"({"k":"a\u0000b"})");
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

TEST(RequestDecoder, WithdrawalsNeedAnAccountAmountCurrencyAndDestination) {
  RequestDecoder decoder;
  WithdrawalCreate w;
  const std::string provider =
      id_text(IdKind::provider, principal_kind_bits(PrincipalKind::provider) | 9);
  Problem p = decoder.withdrawal_create(R"({"account":")" + kDebit +
                                            R"(","amount":7,"currency":"EUR","destination":"x",)"
                                            R"("provider":")" +
                                            provider + R"(","timeout_s":60})",
                                        &w);
  ASSERT_TRUE(p.ok()) << p.message;
  EXPECT_EQ(w.account_id, 0x10u);
  EXPECT_EQ(w.amount, 7u);
  EXPECT_EQ(w.currency.letters(), "EUR");
  EXPECT_EQ(w.destination, "x");
  EXPECT_EQ(w.provider_id, principal_kind_bits(PrincipalKind::provider) | 9);
  EXPECT_EQ(w.timeout_s, 60u);
  const u64 fingerprint = w.extra_hash;
  ASSERT_TRUE(decoder
                  .withdrawal_create(R"({"account":")" + kDebit +
                                         R"(","amount":7,"currency":"EUR","destination":"y",)"
                                         R"("provider":")" +
                                         provider + R"(","timeout_s":60})",
                                     &w)
                  .ok());
  EXPECT_NE(w.extra_hash, fingerprint);  // the destination is part of the request
  ASSERT_TRUE(decoder
                  .withdrawal_create(R"({"account":")" + kDebit +
                                         R"(","amount":7,"currency":"EUR","destination":"y"})",
                                     &w)
                  .ok());
  EXPECT_EQ(w.timeout_s, kWithdrawalTimeoutDefaultS);
  EXPECT_EQ(w.provider_id, 0u);

  const auto code = [&](const std::string& body) {
    return decoder.withdrawal_create(body, &w).code;
  };
  const std::string base = R"("account":")" + kDebit + R"(","amount":7,"currency":"EUR")";
  EXPECT_EQ(code("{" + base + "}"), ResultCode::missing_field);
  EXPECT_EQ(code("{" + base + R"(,"destination":""})"), ResultCode::invalid_field);
  EXPECT_EQ(code("{" + base + R"(,"destination":"x","amount2":1})"), ResultCode::unknown_field);
  EXPECT_EQ(
      code(R"({"account":")" + kDebit + R"(","amount":0,"currency":"EUR","destination":"x"})"),
      ResultCode::invalid_amount);
  // A merchant's id is no provider's.
  EXPECT_EQ(code("{" + base + R"(,"destination":"x","provider":"prv_0000000000000009"})"),
            ResultCode::invalid_field);
  EXPECT_EQ(code("{" + base + R"(,"destination":"x","timeout_s":0})"), ResultCode::invalid_field);
}

TEST(RequestDecoder, WithdrawalResultsAreSuccessOrFailed) {
  RequestDecoder decoder;
  WithdrawalResult r;
  ASSERT_TRUE(decoder.withdrawal_result(R"({"result":"success","provider_ref":"p-1"})", &r).ok());
  EXPECT_TRUE(r.success);
  EXPECT_EQ(r.provider_ref, "p-1");
  ASSERT_TRUE(decoder.withdrawal_result(R"({"result":"failed"})", &r).ok());
  EXPECT_FALSE(r.success);
  EXPECT_EQ(decoder.withdrawal_result(R"({"result":"ok"})", &r).code, ResultCode::invalid_field);
  EXPECT_EQ(decoder.withdrawal_result("{}", &r).code, ResultCode::missing_field);
  EXPECT_EQ(decoder.withdrawal_result("", &r).code, ResultCode::invalid_json);
}

TEST(RequestDecoder, RiskRulesAreReplacedFieldByField) {
  RequestDecoder decoder;
  RiskSet r;
  ASSERT_TRUE(decoder
                  .risk_set(R"({"max_amount":5000,"max_checkouts_per_payer_per_minute":3,)"
                            R"("blocked_payers":["usr_0000400000000002","mer_0000000000000001",)"
                            R"("usr_0000400000000002"]})",
                            &r)
                  .ok());
  EXPECT_TRUE(r.has_max_amount && r.has_payer_velocity && r.has_blocked_payers);
  EXPECT_EQ(r.max_amount, 5000u);
  EXPECT_EQ(r.max_checkouts_per_payer_per_minute, 3u);
  EXPECT_EQ(r.blocked_payers, (std::vector<u64>{1, 0x0000400000000002}));  // sorted, distinct
  // null or 0: none; absent: unchanged.
  ASSERT_TRUE(decoder.risk_set(R"({"max_amount":null,"blocked_payers":null})", &r).ok());
  EXPECT_TRUE(r.has_max_amount && r.has_blocked_payers);
  EXPECT_FALSE(r.has_payer_velocity);
  EXPECT_EQ(r.max_amount, 0u);
  ASSERT_TRUE(decoder.risk_set(R"({"max_checkouts_per_payer_per_minute":0})", &r).ok());
  EXPECT_TRUE(r.has_payer_velocity);
  EXPECT_EQ(r.max_checkouts_per_payer_per_minute, 0u);
  EXPECT_EQ(decoder.risk_set("{}", &r).code, ResultCode::missing_field);
  EXPECT_EQ(decoder.risk_set(R"({"max_amount":-1})", &r).code, ResultCode::invalid_amount);
  EXPECT_EQ(decoder.risk_set(R"({"blocked_payers":["acc_0000000000000001"]})", &r).code,
            ResultCode::invalid_field);
  EXPECT_EQ(decoder.risk_set(R"({"blocked_payers":"usr_0000400000000002"})", &r).code,
            ResultCode::invalid_field);
  EXPECT_EQ(decoder.risk_set(R"({"max_checkouts_per_payer_per_minute":1.5})", &r).code,
            ResultCode::invalid_field);
  EXPECT_EQ(decoder.risk_set(R"({"max_amount":1,"velocity":2})", &r).code,
            ResultCode::unknown_field);
}

TEST(RequestDecoder, UsersAndProviders) {
  RequestDecoder decoder;
  MerchantCreate m;
  EXPECT_TRUE(decoder.user_create("", &m).ok());
  ASSERT_TRUE(decoder.user_create(R"({"name":"Ann"})", &m).ok());
  EXPECT_EQ(m.name, "Ann");
  EXPECT_EQ(decoder.user_create(R"({"parent_id":"mer_0000000000000001"})", &m).code,
            ResultCode::unknown_field);
  ASSERT_TRUE(decoder.provider_create(R"({"name":"Bank"})", &m).ok());
  EXPECT_EQ(m.currency.letters(), "USD");
  ASSERT_TRUE(decoder.provider_create(R"({"name":"Bank","currency":"EUR"})", &m).ok());
  EXPECT_EQ(m.currency.letters(), "EUR");
  EXPECT_EQ(decoder.provider_create("{}", &m).code, ResultCode::missing_field);
  EXPECT_EQ(decoder.provider_create(R"({"name":"B","currency":"eur"})", &m).code,
            ResultCode::invalid_currency);
  // An account's owner may be any principal, by its own prefix.
  AccountCreate a;
  const std::string user = id_text(IdKind::user, principal_kind_bits(PrincipalKind::user) | 3);
  ASSERT_TRUE(decoder.account_create(R"({"currency":"USD","owner":")" + user + R"("})", &a).ok());
  EXPECT_EQ(a.owner_id, principal_kind_bits(PrincipalKind::user) | 3);
  EXPECT_EQ(
      decoder.account_create(R"({"currency":"USD","owner":"mer_)" + user.substr(4) + R"("})", &a)
          .code,
      ResultCode::invalid_field);
}

}  // namespace
}  // namespace paygate::api
