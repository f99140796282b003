#!/usr/bin/env bash
# A first conversation with a running paygate: onboard a merchant, open accounts,
# move money, read a balance and the account's statement; then an order paid from a
# user's wallet, and the shop's list of orders. scripts/run.sh prints
# these lines to copy and paste; a test runs this file against a real server so
# that they keep working.
set -euo pipefail
URL=${PAYGATE_URL:-http://127.0.0.1:8080}; DATA=${PAYGATE_DATA_DIR:-paygate-data}

H="Authorization: Bearer $(cat "$DATA/admin_token")"; J='Content-Type: application/json'
id() { sed -E 's/.*"id":"([^"]+)".*/\1/'; }
MER=$(curl -sf "$URL/v1/merchants" -H "$H" -H "$J" -d '{"name":"Coffee Shop"}' | id)
BANK=$(curl -sf "$URL/v1/accounts" -H "$H" -H "$J" -d '{"currency":"USD","kind":"system"}' | id)
SHOP=$(curl -sf "$URL/v1/accounts" -H "$H" -H "$J" -d "{\"currency\":\"USD\",\"owner\":\"$MER\"}" | id)
curl -sf "$URL/v1/transfers" -H "$H" -H "$J" -H 'Idempotency-Key: first-transfer' \
  -d "{\"debit_account\":\"$BANK\",\"credit_account\":\"$SHOP\",\"amount\":1250,\"currency\":\"USD\"}"; echo
curl -sf "$URL/v1/accounts/$SHOP" -H "$H"; echo
curl -sf "$URL/v1/accounts/$SHOP/entries" -H "$H"; echo
# An order paid from a user's wallet (docs/ORDERS.md): a payer and its wallet, funded;
# the shop's order; the checkout, which needs the order's signature.
USR=$(curl -sf "$URL/v1/users" -H "$H" -H "$J" -d '{"name":"Ann"}' | id)
WALLET=$(curl -sf "$URL/v1/accounts" -H "$H" -H "$J" -d "{\"currency\":\"USD\",\"owner\":\"$USR\"}" | id)
curl -sf "$URL/v1/transfers" -H "$H" -H "$J" -H 'Idempotency-Key: first-deposit' \
  -d "{\"debit_account\":\"$BANK\",\"credit_account\":\"$WALLET\",\"amount\":500,\"currency\":\"USD\"}" >/dev/null
ORDER=$(curl -sf "$URL/v1/orders" -H "$H" -H "$J" -H 'Idempotency-Key: first-order' \
  -d "{\"merchant_ref\":\"cart-1\",\"amount\":300,\"currency\":\"USD\",\"account\":\"$SHOP\"}"); echo "$ORDER"
SIG=$(echo "$ORDER" | sed -E 's/.*"signature":"([^"]+)".*/\1/')
curl -sf "$URL/v1/orders/$(echo "$ORDER" | id)/checkout" -H "$H" -H "$J" -H 'Idempotency-Key: first-checkout' \
  -d "{\"signature\":\"$SIG\",\"method\":\"wallet\",\"payer_account\":\"$WALLET\"}"; echo
# The shop's orders, newest first, from the history store (docs/API.md, "Orders").
curl -sf "$URL/v1/orders?merchant=$MER&limit=10" -H "$H"; echo
